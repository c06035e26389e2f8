"""`entente workspace …`: add, list, pause/resume and inspect shared workspaces."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Annotated

import httpx
import typer
from sqlmodel import Session

from broker.audit.log import append_audit
from broker.clikit import actor, fail, open_session
from broker.errors import BrokerError, InvalidValue
from broker.lifecycle import wakeup
from broker.lifecycle.outbox import queue_stats
from broker.lifecycle.reconcile import Drift, find_drift, repair_drift
from broker.reports.orphans import record_orphans
from broker.settings import Settings
from broker.workspaces.models import OnLeave, Workspace, WorkspaceStatus
from broker.workspaces.service import (
    add_workspace,
    connector_config,
    get_workspace,
    list_workspaces,
    set_workspace_status,
)
from connectors.base import ConnectorError

__all__ = ["workspace_app"]

workspace_app = typer.Typer(help="Shared workspaces and their connectors.", no_args_is_help=True)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; a missing ``=`` is a usage error naming the option."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{what} {item!r} is not KEY=VALUE")
        pairs[key.strip()] = value
    return pairs


@workspace_app.command("add")
def workspace_add(
    slug: str,
    connector: Annotated[str, typer.Option(help="Connector kind: scim, matrix, webhook, slack, github.")],
    set_: Annotated[list[str], typer.Option("--set", help="Connector setting KEY=VALUE (repeatable).")] = [],  # noqa: B006
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    role_groups: Annotated[
        list[str], typer.Option("--role-groups", help="ROLE=G1,G2: workspace groups/rooms/teams a role brings.")
    ] = [],  # noqa: B006
    attribute: Annotated[
        list[str], typer.Option("--attribute", help="NAME=SCIM_PATH for workspace-specific attributes.")
    ] = [],  # noqa: B006
    on_leave: Annotated[OnLeave, typer.Option(help="What losing access does to the account.")] = OnLeave.DEPROVISION,
    rate: Annotated[float, typer.Option(help="Deliveries per second to this workspace.")] = 20.0,
) -> None:
    """Register a workspace; its connector settings are validated now and sealed at rest."""
    settings = Settings()
    groups = {role: [g for g in value.split(",") if g] for role, value in _pairs(role_groups, "--role-groups").items()}
    with open_session(settings) as session:
        try:
            workspace = add_workspace(
                session,
                settings=settings,
                slug=slug,
                name=name,
                connector=connector,
                values=_pairs(set_, "--set"),
                role_groups=groups,
                attribute_map=_pairs(attribute, "--attribute"),
                on_leave=on_leave,
                rate_per_second=rate,
                actor=actor(),
            )
        except BrokerError as error:
            fail(error)
    typer.echo(f"workspace {workspace.slug} ({workspace.connector}) added; id {workspace.id}")


@workspace_app.command("list")
def workspace_list() -> None:
    """Every workspace with its connector, status and leave behaviour."""
    with open_session(Settings()) as session:
        for w in list_workspaces(session):
            typer.echo(f"{w.slug}\t{w.connector}\t{w.status}\ton-leave={w.on_leave}\t{w.name}")


@workspace_app.command("status")
def workspace_status(slug: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Queue depth, dead letters, last delivery and last error of one workspace."""
    with open_session(Settings()) as session:
        try:
            workspace = get_workspace(session, slug=slug)
        except BrokerError as error:
            fail(error)
        stats = queue_stats(session, workspace_id=workspace.id)
    report = {
        "workspace": workspace.slug,
        "connector": workspace.connector,
        "status": workspace.status,
        "status_reason": workspace.status_reason,
        "config": workspace.config_public,
        "pending": stats.pending,
        "running": stats.running,
        "dead": stats.dead,
        "oldest_waiting_since": stats.oldest_pending_at.isoformat() if stats.oldest_pending_at else None,
        "last_delivery_at": stats.last_done_at.isoformat() if stats.last_done_at else None,
        "last_error": stats.last_error,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        typer.echo(f"{key}: {value if value is not None else '-'}")


def _set_status(slug: str, status: WorkspaceStatus, reason: str | None) -> None:
    with open_session(Settings()) as session:
        try:
            set_workspace_status(session, slug=slug, status=status, reason=reason, actor=actor())
        except BrokerError as error:
            fail(error)
    typer.echo(f"workspace {slug} {status.value}")


@workspace_app.command("pause")
def workspace_pause(slug: str, reason: Annotated[str, typer.Option(help="Why (audited).")]) -> None:
    """Hold deliveries to a workspace; tasks keep queueing and nothing is lost."""
    if not reason.strip():
        fail(InvalidValue("a reason is required"))
    _set_status(slug, WorkspaceStatus.PAUSED, reason)


@workspace_app.command("resume")
def workspace_resume(slug: str) -> None:
    """Deliver again to a paused workspace, in order, from where it stopped."""
    _set_status(slug, WorkspaceStatus.ACTIVE, None)


@workspace_app.command("reconcile")
def workspace_reconcile(
    slug: str,
    fix: Annotated[bool, typer.Option("--fix", help="Queue repairs: revoke orphans, re-provision missing.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Compare the workspace's accounts with the grants: orphaned, missing and unmanaged accounts."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            workspace = get_workspace(session, slug=slug)
            drift = asyncio.run(_drift(settings, session, workspace))
        except (BrokerError, ConnectorError) as error:
            fail(error if isinstance(error, BrokerError) else InvalidValue(f"{slug}: {error.detail}"))
        record_orphans(session, workspace=workspace, drift=drift)  # kept for `entente report stale`
        session.commit()
        repaired = 0
        if fix:
            repaired = repair_drift(session, workspace=workspace, drift=drift)
            append_audit(
                session, actor=actor(), action="workspace.reconciled", partner_id=None, resource_type="Workspace",
                resource_id=workspace.id, detail={"drift": len(drift), "repaired": repaired},
            )  # fmt: skip
            session.commit()
            wakeup.notify()
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(d) for d in drift], indent=2))
        return
    for d in drift:
        typer.echo(f"{d.kind:9} {d.subject_id or '-':36} {d.remote_id or '-':36} {d.user_name or ''}")
    summary = f"{len(drift)} difference{'s' if len(drift) != 1 else ''}"
    typer.echo(summary + (f"; repairs queued for {repaired} people" if fix else ""))


async def _drift(settings: Settings, session: Session, workspace: Workspace) -> list[Drift]:
    async with httpx.AsyncClient(timeout=settings.delivery_timeout_seconds) as http:
        connector = connector_config(settings, workspace).open(http)
        try:
            return await find_drift(session, workspace=workspace, connector=connector)
        finally:
            await connector.aclose()
