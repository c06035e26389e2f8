"""`entente idp …`: connect a partner's identity provider (OIDC or SAML 2.0) for federated login, and list them."""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
import typer

from broker.clikit import actor, fail, open_session
from broker.errors import BadRequest, BrokerError
from broker.federation.cache import callback_url, saml_entity_id
from broker.federation.discovery import fetch_metadata
from broker.federation.models import BindingKey
from broker.federation.saml_metadata import load_metadata_source
from broker.federation.service import add_oidc_connection, add_saml_connection, check_issuer, list_connections
from broker.settings import Settings

__all__ = ["idp_app"]

idp_app = typer.Typer(help="Partners' identity providers (federated login).", no_args_is_help=True)


async def _discover(issuer: str, timeout: float) -> None:
    async with httpx.AsyncClient(timeout=timeout) as http:
        await fetch_metadata(http, issuer)


@idp_app.command("add")
def idp_add(
    partner: Annotated[str, typer.Argument(help="The partner's slug.")],
    oidc_issuer: Annotated[
        str | None, typer.Option(help="OIDC: the IdP's issuer URL, exactly as its `iss` claim.")
    ] = None,
    client_id: Annotated[str | None, typer.Option(help="OIDC: Entente's client id at the partner's IdP.")] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            envvar="ENTENTE_IDP_CLIENT_SECRET", help="OIDC: the client secret (sealed at rest); or from this env var."
        ),
    ] = None,
    saml_metadata: Annotated[
        str | None,
        typer.Option(help="SAML 2.0: the IdP's metadata, a file or an https URL (read now and pinned)."),
    ] = None,
    saml_email_verified: Annotated[
        bool,
        typer.Option(
            "--saml-email-verified",
            help="SAML: vouch that this IdP asserts only verified email addresses (for --bind email and --jit).",
        ),
    ] = False,
    bind: Annotated[BindingKey, typer.Option(help="SCIM attribute an upstream identity is bound by.")] = (
        BindingKey.EXTERNAL_ID
    ),
    username_claim: Annotated[
        str | None,
        typer.Option(
            help="With --bind userName: the claim (SAML: attribute) compared with userName "
            "[default: preferred_username; SAML: mail]."
        ),
    ] = None,
    jit: Annotated[
        bool, typer.Option("--jit", help="Create unknown people at first login (needs a verified email).")
    ] = (False),
    name: Annotated[
        str | None,
        typer.Option(help="Connection name, unique in the partner (part of the redirect URI) [default: oidc / saml]."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Fetch the IdP's discovery document now, to fail at setup.")
    ] = True,
) -> None:
    """Connect an OIDC or SAML 2.0 IdP of a partner; prints what to register at that IdP."""
    settings = Settings()
    if (oidc_issuer is None) == (saml_metadata is None):
        fail(BadRequest("give either --oidc-issuer (OpenID Connect) or --saml-metadata (SAML 2.0)"))
    if saml_metadata is not None:
        _add_saml(
            settings,
            partner,
            saml_metadata,
            name=name or "saml",
            bind=bind,
            username_claim=username_claim or "mail",
            jit=jit,
            email_verified=saml_email_verified,
        )
        return
    assert oidc_issuer is not None  # one of the two is given
    if not client_id or not client_secret:
        fail(BadRequest("an OIDC connection needs --client-id and --client-secret (or ENTENTE_IDP_CLIENT_SECRET)"))
    assert client_id is not None and client_secret is not None
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
                name=name or "oidc",
                binding_key=bind,
                username_claim=username_claim or "preferred_username",
                jit=jit,
            )
        except BrokerError as error:
            fail(error)
        typer.echo(f"idp connection {connection.id} (oidc, bind {connection.binding_key}) added for partner {partner}")
        typer.echo(f"redirect URI to register at the IdP: {callback_url(settings, connection.id)}")
        typer.echo(f"sign-in link for {partner}'s people: {settings.public_base_url.rstrip('/')}/login/{partner}")


def _add_saml(
    settings: Settings,
    partner: str,
    source: str,
    *,
    name: str,
    bind: BindingKey,
    username_claim: str,
    jit: bool,
    email_verified: bool,
) -> None:
    """Read the metadata (file or URL), add the connection, print what the partner configures at its IdP."""
    try:
        metadata_xml = load_metadata_source(source, timeout=settings.federation_http_timeout_seconds)
    except BrokerError as error:
        fail(error)
    with open_session(settings) as session:
        try:
            connection = add_saml_connection(
                session=session,
                partner_slug=partner,
                metadata_xml=metadata_xml,
                actor=actor(),
                name=name,
                binding_key=bind,
                username_claim=username_claim,
                jit=jit,
                email_verified=email_verified,
            )
        except BrokerError as error:
            fail(error)
    base = settings.public_base_url.rstrip("/")
    typer.echo(f"idp connection {connection.id} (saml, bind {connection.binding_key}) added for partner {partner}")
    typer.echo(f"IdP entity ID: {connection.issuer}")
    typer.echo(f"SP metadata to import at the IdP (also its entity ID): {saml_entity_id(settings, connection.id)}")
    typer.echo(f"  ACS URL (HTTP-POST): {callback_url(settings, connection.id)}")
    typer.echo(f"sign-in link for {partner}'s people: {base}/login/{partner}")


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
            client = c.client_id or "-"  # SAML connections have none
            typer.echo(f"{c.id}\t{row.partner_slug}\t{c.protocol}\t{c.issuer}\t{client}\tbind={c.binding_key}\t{jit}")
