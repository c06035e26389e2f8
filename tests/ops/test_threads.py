"""A request's blocking work runs in its app's own pool (broker.threads): sized to the database pool,
carrying the caller's context variables, closed with the app."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from types import SimpleNamespace

import pytest

from broker.settings import Settings
from broker.threads import in_thread, request_threads, shut_down_request_threads

_WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def _state(pool_size: int) -> SimpleNamespace:
    return SimpleNamespace(settings=Settings(database_pool_size=pool_size))


def test_work_runs_off_the_loop_with_the_callers_context_and_keyword_arguments() -> None:
    state = _state(3)

    def work(prefix: str, *, suffix: str) -> tuple[str, str]:
        return f"{prefix}{_WHO.get()}{suffix}", threading.current_thread().name

    async def call() -> tuple[str, str]:
        _WHO.set("request-7")
        return await in_thread(state, work, "<", suffix=">")

    try:
        answer, thread = asyncio.run(call())
    finally:
        shut_down_request_threads(state)
    assert answer == "<request-7>"
    assert thread.startswith("entente-request") and thread != threading.main_thread().name


def test_the_pool_has_as_many_threads_as_the_database_pool_and_is_made_once() -> None:
    state = _state(4)
    pool = request_threads(state)
    try:
        assert pool._max_workers == 4  # the one setting of a ThreadPoolExecutor worth checking
        assert request_threads(state) is pool
        inside = threading.Barrier(4, timeout=10)

        async def four_at_once() -> list[int]:
            return await asyncio.gather(*(in_thread(state, inside.wait) for _ in range(4)))

        assert sorted(asyncio.run(four_at_once())) == [0, 1, 2, 3]  # all four ran at the same time
    finally:
        shut_down_request_threads(state)


def test_after_shutdown_the_app_takes_no_more_work_in_the_old_pool() -> None:
    state = _state(2)
    old = request_threads(state)
    shut_down_request_threads(state)
    with pytest.raises(RuntimeError, match="shutdown"):
        old.submit(print)
    assert state.request_threads is None
