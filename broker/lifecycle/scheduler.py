"""Timed jobs (APScheduler): grants past their end date end by themselves, without any event."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine
from sqlmodel import Session

from broker.audit.checkpoints import run_checkpointer
from broker.lifecycle import wakeup
from broker.lifecycle.engine import expire_grants
from broker.settings import Settings

__all__ = ["end_expired_grants", "start_scheduler"]

log = logging.getLogger("entente.scheduler")


def end_expired_grants(engine: Engine) -> int:
    """Re-decide every holder of a grant past its ``until`` and wake the worker if access changed."""
    with Session(engine, expire_on_commit=False) as session:
        changes = expire_grants(session)
    if changes:
        log.info("ended %d expired grants", len(changes))
        wakeup.notify()
    return len(changes)


def start_scheduler(engine: Engine, settings: Settings) -> AsyncIOScheduler:
    """Start the jobs on the running event loop; the caller shuts the scheduler down."""
    scheduler = AsyncIOScheduler(timezone="UTC")

    async def job() -> None:
        await asyncio.to_thread(end_expired_grants, engine)

    scheduler.add_job(
        job,
        "interval",
        seconds=settings.grant_expiry_interval_seconds,
        id="end-expired-grants",
        max_instances=1,
        coalesce=True,
        next_run_time=dt.datetime.now(dt.UTC),  # once at start, then every interval
    )

    async def audit_job() -> None:
        await asyncio.to_thread(run_checkpointer, engine, settings)

    scheduler.add_job(  # sequence audit records and sign checkpoints (broker/audit/checkpoints.py)
        audit_job,
        "interval",
        seconds=min(1.0, settings.audit_checkpoint_interval_seconds),
        id="audit-checkpoints",
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    return scheduler
