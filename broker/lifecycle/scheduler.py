"""Timed jobs (APScheduler): grants past their end date end by themselves, without any event."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine
from sqlmodel import Session

from broker.audit.checkpoints import run_checkpointer
from broker.audit.siem import SiemShipper
from broker.lifecycle import wakeup
from broker.lifecycle.engine import expire_grants
from broker.settings import Settings

__all__ = ["end_expired_grants", "start_scheduler", "stop_scheduler"]

log = logging.getLogger("entente.scheduler")


def end_expired_grants(engine: Engine) -> int:
    """Re-decide every holder of a grant past its ``until`` and wake the worker if access changed."""
    with Session(engine, expire_on_commit=False) as session:
        changes = expire_grants(session)
    if changes:
        log.info("ended %d expired grants", len(changes))
        wakeup.notify()
    return len(changes)


_running: set[asyncio.Task[Any]] = set()
"""Job runs in progress in this process, so that ``stop_scheduler`` can let them finish."""


async def _in_thread(function: Callable[..., object], *args: object) -> None:
    """Run a job's blocking work in a thread, registered as running until it ends."""
    task = asyncio.current_task()  # APScheduler runs each coroutine job as a task
    if task is not None:
        _running.add(task)
        task.add_done_callback(_running.discard)
    await asyncio.to_thread(function, *args)


async def stop_scheduler(scheduler: AsyncIOScheduler, *, timeout: float = 10.0) -> None:
    """Start no more runs, let the runs in progress finish, then shut down.

    APScheduler cancels the runs still in progress at shutdown and logs each as a failed job; a
    run's thread cannot be cancelled anyway, so it is waited for (up to ``timeout``) instead.
    """
    scheduler.pause()
    loop = asyncio.get_running_loop()
    mine = [task for task in list(_running) if task.get_loop() is loop]  # tests run apps on several loops
    if mine:
        await asyncio.wait(mine, timeout=timeout)
    await asyncio.sleep(0)  # the executor's done-callbacks of those runs
    scheduler.shutdown(wait=False)


def start_scheduler(engine: Engine, settings: Settings) -> AsyncIOScheduler:
    """Start the jobs on the running event loop; the caller shuts the scheduler down."""
    scheduler = AsyncIOScheduler(timezone="UTC")

    async def job() -> None:
        await _in_thread(end_expired_grants, engine)

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
        await _in_thread(run_checkpointer, engine, settings)

    scheduler.add_job(  # sequence audit records and sign checkpoints (broker/audit/checkpoints.py)
        audit_job,
        "interval",
        seconds=min(1.0, settings.audit_checkpoint_interval_seconds),
        id="audit-checkpoints",
        max_instances=1,
        coalesce=True,
    )

    siem = SiemShipper(engine, settings)
    if siem.sinks:  # stream sequenced audit records to the SIEM(s) (broker/audit/siem.py)

        async def siem_job() -> None:
            await _in_thread(siem.run_once)

        scheduler.add_job(siem_job, "interval", seconds=1.0, id="audit-siem", max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler
