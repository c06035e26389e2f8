"""The timed jobs' shutdown: a run in progress finishes, and nothing is logged as a failed job."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from broker.lifecycle.scheduler import _in_thread, stop_scheduler


def test_stopping_lets_a_running_job_finish_without_an_error_log(caplog: pytest.LogCaptureFixture) -> None:
    finished = threading.Event()
    started = threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.3)
        finished.set()

    async def job() -> None:
        await _in_thread(slow)

    async def run() -> None:
        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(job, "date", run_date=dt.datetime.now(dt.UTC))
        scheduler.start()
        while not started.is_set():
            await asyncio.sleep(0.01)
        await stop_scheduler(scheduler)

    with caplog.at_level(logging.INFO, logger="apscheduler"):
        asyncio.run(run())
    assert finished.is_set(), "the run in progress was waited for"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
