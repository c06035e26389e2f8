"""`entente report stale`: the stale-access report on stdout, streamed as a table, CSV or JSON Lines."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from broker.clikit import database_error, fail, open_session
from broker.errors import BrokerError
from broker.reports.render import ReportFormat, render
from broker.reports.runner import stale_access
from broker.reports.scope import ReportOptions, resolve_scope
from broker.settings import Settings

__all__ = ["report_app"]

report_app = typer.Typer(help="Reports over partners, people, grants and deliveries.", no_args_is_help=True)


@report_app.command("stale")
def report_stale(
    partner: Annotated[str | None, typer.Option(help="Only this partner (slug).")] = None,
    workspace: Annotated[str | None, typer.Option(help="Only this workspace (slug).")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="table, csv, or json (JSON Lines).")] = (
        ReportFormat.TABLE
    ),
    inactive_days: Annotated[
        int | None, typer.Option(help="Days without login or SCIM change (default ENTENTE_REPORT_INACTIVE_DAYS).")
    ] = None,
    silent_days: Annotated[
        int | None, typer.Option(help="Days without a SCIM change (default ENTENTE_REPORT_SILENT_FEED_DAYS).")
    ] = None,
    token_expiry_days: Annotated[
        int | None, typer.Option(help="Expiring within (default ENTENTE_REPORT_TOKEN_EXPIRY_DAYS).")
    ] = None,
    token_unused_days: Annotated[
        int | None, typer.Option(help="Unused for (default ENTENTE_REPORT_TOKEN_UNUSED_DAYS).")
    ] = None,
) -> None:
    """Orphaned accounts, inactive people, expired grants, pending revocations, silent feeds, SCIM tokens."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            scope = resolve_scope(session, partner_slug=partner, workspace_slug=workspace)
            options = ReportOptions.from_settings(
                settings,
                inactive_days=inactive_days,
                silent_feed_days=silent_days,
                token_expiry_days=token_expiry_days,
                token_unused_days=token_unused_days,
            )
        except BrokerError as error:
            fail(error)
        engine = session.get_bind()
        assert isinstance(engine, Engine)
        session.rollback()  # the report reads in its own snapshot
        try:
            for chunk in render(stale_access(engine, scope=scope, options=options), fmt):
                typer.echo(chunk, nl=False)
        except SQLAlchemyError as exc:
            database_error(settings, exc)
