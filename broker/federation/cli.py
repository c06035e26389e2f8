"""`entente idp …`: connect a partner's identity provider for federated login, and list connections."""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
import typer

from broker.clikit import actor, fail, open_session
from broker.errors import BrokerError
from broker.federation.cache import callback_url
from broker.federation.discovery import fetch_metadata
from broker.federation.models import BindingKey
from broker.federation.service import add_oidc_connection, check_issuer, list_connections
from broker.settings import Settings

__all__ = ["idp_app"]

idp_app = typer.Typer(help="Partners' identity providers (federated login).", no_args_is_help=True)


async def _discover(issuer: str, timeout: float) -> None:
    async with httpx.AsyncClient(timeout=timeout) as http:
        await fetch_metadata(http, issuer)


@idp_app.command("add")
def idp_add(
    partner: Annotated[str, typer.Argument(help="The partner's slug.")],
    oidc_issuer: Annotated[str, typer.Option(help="The IdP's OIDC issuer URL, exactly as its `iss` claim.")],
    client_id: Annotated[str, typer.Option(help="Entente's client id at the partner's IdP.")],
    client_secret: Annotated[
        str,
        typer.Option(
            envvar="ENTENTE_IDP_CLIENT_SECRET", help="The client secret (sealed at rest); or from this env var."
        ),
    ],
    bind: Annotated[BindingKey, typer.Option(help="SCIM attribute an upstream identity is bound by.")] = (
        BindingKey.EXTERNAL_ID
    ),
    username_claim: Annotated[
        str, typer.Option(help="With --bind userName: the claim compared with userName.")
    ] = "preferred_username",
    jit: Annotated[
        bool, typer.Option("--jit", help="Create unknown people at first login (needs a verified email).")
    ] = (False),
    name: Annotated[str, typer.Option(help="Connection name, unique in the partner (part of the redirect URI).")] = (
        "oidc"
    ),
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Fetch the IdP's discovery document now, to fail at setup.")
    ] = True,
) -> None:
    """Connect an OIDC IdP of a partner; prints the redirect URI to register at that IdP."""
    settings = Settings()
    try:
        check_issuer(oidc_issuer)
        if check:
            asyncio.run(_discover(oidc_issuer, settings.federation_http_timeout_seconds))
    except BrokerError as error:
        fail(error)
    with open_session(settings) as session:
        try:
            connection = add_oidc_connection(
                session=session,
                settings=settings,
                partner_slug=partner,
                issuer=oidc_issuer,
                client_id=client_id,
                client_secret=client_secret,
                actor=actor(),
                name=name,
                binding_key=bind,
                username_claim=username_claim,
                jit=jit,
            )
        except BrokerError as error:
            fail(error)
        typer.echo(f"idp connection {connection.id} (oidc, bind {connection.binding_key}) added for partner {partner}")
        typer.echo(f"redirect URI to register at the IdP: {callback_url(settings, connection.id)}")
        typer.echo(f"sign-in link for {partner}'s people: {settings.public_base_url.rstrip('/')}/login/{partner}")


@idp_app.command("list")
def idp_list(
    partner: Annotated[str | None, typer.Argument(help="Only this partner's connections.")] = None,
) -> None:
    """List IdP connections: id, partner, protocol, issuer, client id, binding, JIT (never the secret)."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            rows = list_connections(session=session, partner_slug=partner)
        except BrokerError as error:
            fail(error)
        for row in rows:
            c = row.connection
            jit = "jit" if c.jit else "no-jit"
            typer.echo(
                f"{c.id}\t{row.partner_slug}\t{c.protocol}\t{c.issuer}\t{c.client_id}\tbind={c.binding_key}\t{jit}"
            )
