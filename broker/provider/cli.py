"""`entente client …`: register workspaces' OIDC clients, list them, rotate the signing key."""

from __future__ import annotations

from typing import Annotated

import typer

from broker.clikit import actor, fail, open_session
from broker.errors import BrokerError
from broker.provider.clients import SUPPORTED_SCOPES, add_client, list_clients
from broker.provider.discovery import issuer_of
from broker.provider.keys import key_ring, rotate_signing_key
from broker.settings import Settings

__all__ = ["client_app"]

client_app = typer.Typer(help="OIDC clients: the workspaces that log people in through Entente.", no_args_is_help=True)


@client_app.command("add")
def client_add(
    slug: Annotated[str, typer.Argument(help="The client_id, e.g. synapse-acme.")],
    workspace: Annotated[str, typer.Option(help="Slug of the workspace the client belongs to.")],
    redirect_uri: Annotated[list[str], typer.Option(help="Exact redirect URI (repeatable).")],
    backchannel_logout_uri: Annotated[
        str | None, typer.Option(help="Where back-channel logout tokens are POSTed.")
    ] = None,
    post_logout_redirect_uri: Annotated[
        list[str], typer.Option(help="Allowed post_logout_redirect_uri (repeatable).")
    ] = [],  # noqa: B006
    scope: Annotated[
        list[str], typer.Option(help=f"Allowed scope (repeatable; default {' '.join(SUPPORTED_SCOPES)}).")
    ] = [],  # noqa: B006
    public: Annotated[bool, typer.Option(help="A public client: no secret, PKCE S256 required.")] = False,
) -> None:
    """Register a client; prints its client_id and, once, its secret (on the last line)."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            added = add_client(
                session,
                slug=slug,
                workspace_slug=workspace,
                redirect_uris=redirect_uri,
                backchannel_logout_uri=backchannel_logout_uri,
                post_logout_redirect_uris=post_logout_redirect_uri,
                scopes=scope or None,
                public=public,
                actor=actor(),
            )
        except BrokerError as error:
            fail(error)
    typer.echo(f"client {added.client.client_id} added for workspace {workspace}; issuer {issuer_of(settings)}")
    typer.echo(f"client_id: {added.client.client_id}")
    if added.secret is None:
        typer.echo("public client: no secret; PKCE S256 is required")
    else:
        typer.echo("client_secret (shown once; store it now):")
        typer.echo(added.secret)


@client_app.command("list")
def client_list() -> None:
    """Every client: id, workspace, type, redirect URIs, back-channel logout URI."""
    with open_session(Settings()) as session:
        for client, workspace in list_clients(session):
            kind = "public" if client.secret_sha256 is None else "confidential"
            uris = ",".join(client.redirect_uris)
            typer.echo(f"{client.client_id}\t{workspace.slug}\t{kind}\t{uris}\t{client.backchannel_logout_uri or '-'}")


@client_app.command("rotate-key")
def client_rotate_key(
    now: Annotated[
        bool, typer.Option("--now", help="Sign with the new key at once (a compromised key), not after publication.")
    ] = False,
) -> None:
    """Add a new ID token signing key; the old one stays published until its tokens expire."""
    settings = Settings()
    with open_session(settings) as session:
        key_ring(session, settings=settings)
        row = rotate_signing_key(session, settings=settings, immediate=now)
        session.commit()
    typer.echo(f"signing key {row.kid} added; it signs from {row.active_from.isoformat()}")
