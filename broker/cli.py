"""The `entente` command: serve, migrate, demo, and partner administration."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from broker.audit.cli import audit_app, partner_audit_key
from broker.clikit import actor, database_error, fail, open_session, parse_duration
from broker.db import migrate
from broker.demo import set_up_demo
from broker.errors import BrokerError
from broker.federation.cli import idp_app
from broker.lifecycle.cli import outbox_app, worker
from broker.lifecycle.killswitch_cli import kill_app
from broker.observability.logging import log_config
from broker.observability.metrics import prepare_multiprocess
from broker.policy.cli import policy_app
from broker.provider.cli import client_app
from broker.reports.cli import report_app
from broker.settings import Settings
from broker.signals.cli import signals_app
from broker.tenants.models import DomainPolicy
from broker.tenants.service import (
    add_partner,
    issue_scim_token,
    list_partners,
    list_tokens,
    partner_domains,
    revoke_scim_token,
    set_domain_policy,
)
from broker.workspaces.cli import workspace_app

__all__ = ["app"]

app = typer.Typer(help="Entente: a neutral identity and provisioning broker.", no_args_is_help=True)
partner_app = typer.Typer(help="Partners (tenants), their domains and SCIM tokens.", no_args_is_help=True)
app.add_typer(partner_app, name="partner")
app.add_typer(audit_app, name="audit")
partner_app.command("audit-key")(partner_audit_key)
app.add_typer(workspace_app, name="workspace")
app.add_typer(client_app, name="client")
app.add_typer(policy_app, name="policy")
app.add_typer(idp_app, name="idp")
app.add_typer(outbox_app, name="outbox")
app.add_typer(report_app, name="report")
app.add_typer(kill_app, name="kill")
app.add_typer(signals_app, name="signals")
app.command("worker")(worker)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default ENTENTE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default ENTENTE_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes (default ENTENTE_WORKERS).")] = None,
) -> None:
    """Apply migrations, then serve the API."""
    import uvicorn

    settings = Settings()
    migrate(settings)
    processes = workers or settings.workers
    prepare_multiprocess(processes)  # several processes: metrics shared through PROMETHEUS_MULTIPROC_DIR
    uvicorn.run(
        "broker.main:app_from_environment",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=processes,
        log_config=log_config(settings),
        log_level=settings.log_level.lower(),
        access_log=False,  # the richer access line (request id, partner) is broker.observability.http's
        # A spawned server process imports all of Entente before it answers the supervisor's health
        # check: uvicorn's 5 s default killed them as hung on a busy 2-core machine.
        timeout_worker_healthcheck=30,
    )


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema to the newest revision."""
    settings = Settings()
    try:
        migrate(settings)
    except SQLAlchemyError as exc:
        database_error(settings, exc)
    typer.echo("schema is up to date")


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve after setting up.")] = True,
) -> None:
    """Set up partner 'acme', the demo workspace 'demo-wiki' and their policy; print a token; serve."""
    settings = Settings()
    migrate(settings)
    with open_session(settings) as session:
        setup = set_up_demo(session, settings=settings, actor=actor())
    issued = setup.acme_token
    base = settings.public_base_url.rstrip("/")
    typer.echo(f"Demo partner 'acme' (domain acme.test). SCIM base URL: {base}/scim/v2")
    typer.echo(f"Try: curl -H 'Authorization: Bearer $TOKEN' {base}/scim/v2/Users")
    typer.echo(
        "Workspace 'demo-wiki' (a SCIM app: Entente's own tenant 'demo-wiki'): acme users in group 'eng' are "
        "provisioned there; see `entente workspace status demo-wiki`."
    )
    typer.echo("SCIM bearer token (shown once):")
    typer.echo(issued.secret_text)
    sys.stdout.flush()
    if serve_after:
        serve(host=host, port=port, workers=None)


@partner_app.command("add")
def partner_add(
    slug: Annotated[str, typer.Argument(help="Short lower-case id, e.g. acme.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    domain: Annotated[list[str], typer.Option(help="Verified email domain; repeat for several.")],
    warn_only: Annotated[bool, typer.Option(help="Accept out-of-domain users with an audited warning.")] = False,
) -> None:
    """Add a partner with its verified email domains."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            partner = add_partner(
                session=session,
                slug=slug,
                name=name,
                domains=domain,
                actor=actor(),
                domain_policy=DomainPolicy.WARN if warn_only else DomainPolicy.ENFORCE,
            )
        except BrokerError as error:
            fail(error)
        typer.echo(
            f"partner {partner.slug} added ({', '.join(partner_domains(session=session, partner_id=partner.id))})"
        )


@partner_app.command("list")
def partner_list() -> None:
    """List partners with their domains and status."""
    settings = Settings()
    with open_session(settings) as session:
        for partner in list_partners(session=session):
            domains = ", ".join(partner_domains(session=session, partner_id=partner.id))
            typer.echo(f"{partner.slug}\t{partner.status}\t{partner.domain_policy}\t{partner.name}\t{domains}")


@partner_app.command("domain-policy")
def partner_domain_policy(slug: str, policy: Annotated[DomainPolicy, typer.Argument(help="enforce or warn")]) -> None:
    """Refuse (enforce) or accept with a warning (warn) users outside the verified domains."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            set_domain_policy(session=session, slug=slug, policy=policy, actor=actor())
        except BrokerError as error:
            fail(error)
        typer.echo(f"partner {slug}: domain policy {policy.value}")


@partner_app.command("token")
def partner_token(
    slug: str,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime: 90d, 12h, 30m (default ENTENTE_SCIM_TOKEN_DEFAULT_DAYS).")
    ] = None,
    label: Annotated[str | None, typer.Option(help="What the token is for, e.g. 'Okta prod'.")] = None,
) -> None:
    """Create a SCIM bearer token; it is printed once, alone on the last line."""
    settings = Settings()
    lifetime = parse_duration(expires) if expires else dt.timedelta(days=settings.scim_token_default_days)
    with open_session(settings) as session:
        try:
            issued = issue_scim_token(session=session, slug=slug, expires_in=lifetime, actor=actor(), label=label)
        except BrokerError as error:
            fail(error)
        typer.echo(f"token id {issued.token.id}, expires {issued.token.expires_at.isoformat()}; store it now:")
        typer.echo(issued.secret_text)


@partner_app.command("tokens")
def partner_tokens(slug: str) -> None:
    """List a partner's tokens (ids and dates only; secrets are never stored)."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            tokens = list_tokens(session=session, slug=slug)
        except BrokerError as error:
            fail(error)
        for token in tokens:
            state = "revoked" if token.revoked_at else "active"
            used = token.last_used_at.isoformat() if token.last_used_at else "never"
            typer.echo(
                f"{token.id}\t{state}\texpires {token.expires_at.isoformat()}\tlast used {used}\t{token.label or ''}"
            )


@partner_app.command("revoke-token")
def partner_revoke_token(slug: str, token_id: str) -> None:
    """Revoke a SCIM token at once."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            revoke_scim_token(session=session, slug=slug, token_id=token_id, actor=actor())
        except BrokerError as error:
            fail(error)
        typer.echo(f"token {token_id} revoked")
