"""`entente outbox …` and `entente worker`: inspect and retry deliveries, or run delivery alone."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Annotated

import typer
from sqlmodel import col, select

from broker.audit.log import append_audit
from broker.clikit import actor, fail, open_session
from broker.db import create_db_engine, migrate
from broker.errors import BrokerError, InvalidValue
from broker.lifecycle import wakeup
from broker.lifecycle.outbox import DeliveryTask, TaskState, retry_dead_tasks
from broker.lifecycle.scheduler import start_scheduler, stop_scheduler
from broker.lifecycle.worker import DeliveryWorker
from broker.provider.logout import LogoutSender
from broker.settings import Settings
from broker.signals.push import SignalSender
from broker.workspaces.models import Workspace
from broker.workspaces.service import get_workspace

__all__ = ["outbox_app", "worker"]

outbox_app = typer.Typer(help="Delivery tasks waiting, running or dead.", no_args_is_help=True)


@outbox_app.command("list")
def outbox_list(
    failed: Annotated[bool, typer.Option("--failed", help="Only dead letters.")] = False,
    workspace: Annotated[str | None, typer.Option(help="Only this workspace.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Tasks not yet delivered, oldest first, with attempts and last error."""
    with open_session(Settings()) as session:
        slugs = {w.id: w.slug for w in session.exec(select(Workspace)).all()}
        query = select(DeliveryTask).order_by(col(DeliveryTask.id)).limit(limit)
        if failed:
            query = query.where(DeliveryTask.state == TaskState.DEAD.value)
        if workspace is not None:
            try:
                query = query.where(DeliveryTask.workspace_id == get_workspace(session, slug=workspace).id)
            except BrokerError as error:
                fail(error)
        tasks = session.exec(query).all()
    rows = [
        {
            "id": t.id,
            "workspace": slugs.get(t.workspace_id, t.workspace_id),
            "subject_id": t.subject_id,
            "action": t.action,
            "state": t.state,
            "attempts": t.attempts,
            "not_before": t.not_before.isoformat(),
            "cause": t.cause,
            "last_error": t.last_error,
        }
        for t in tasks
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(
            f"{r['id']}\t{r['workspace']}\t{r['action']}\t{r['state']}\tattempts={r['attempts']}\t"
            f"{r['subject_id']}\t{r['last_error'] or ''}"
        )
    typer.echo(f"{len(rows)} task{'s' if len(rows) != 1 else ''}")


@outbox_app.command("retry")
def outbox_retry(
    task_ids: Annotated[list[int], typer.Argument(help="Dead task ids; none with --all.")] = [],  # noqa: B006
    workspace: Annotated[str | None, typer.Option(help="Only this workspace's dead tasks.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead task (of --workspace, if given).")] = False,
) -> None:
    """Give dead tasks a fresh set of attempts now, in their original order; audited."""
    if not task_ids and not all_:
        fail(InvalidValue("name dead task ids, or pass --all"))
    with open_session(Settings()) as session:
        try:
            workspace_id = get_workspace(session, slug=workspace).id if workspace else None
        except BrokerError as error:
            fail(error)
        count = retry_dead_tasks(session, task_ids=task_ids or None, workspace_id=workspace_id)
        append_audit(
            session,
            actor=actor(),
            action="outbox.retried",
            partner_id=None,
            resource_type="Task",
            detail={"task_ids": task_ids, "workspace": workspace, "count": count},
        )
        session.commit()
    wakeup.notify()
    typer.echo(f"{count} dead task{'s' if count != 1 else ''} queued again")


def worker() -> None:
    """Run the engine, the delivery worker, back-channel logouts and the timed jobs without the HTTP API."""
    settings = Settings()
    migrate(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        engine = create_db_engine(settings)
        scheduler = start_scheduler(engine, settings)
        try:
            await asyncio.gather(
                DeliveryWorker(engine=engine, settings=settings).run(stop),
                LogoutSender(engine=engine, settings=settings).run(stop),
                SignalSender(engine=engine, settings=settings).run(stop),
            )
        finally:
            await stop_scheduler(scheduler)
            engine.dispose()

    typer.echo("delivery worker running; Ctrl-C stops it")
    asyncio.run(main())
