"""A request's blocking work (database, XML signatures) off the event loop, in its app's own thread pool.

Not Starlette's ``run_in_threadpool`` (``anyio.to_thread.run_sync``): per call, anyio takes a capacity
limiter token, opens a cancel scope, looks up run variables and hands the call over through a
``queue.Queue`` and its condition variable, all on the event loop while it holds the interpreter
lock. asyncio's ``run_in_executor`` over a ``ThreadPoolExecutor`` (a C ``SimpleQueue``) does the same
hop for less: at 16 concurrent refresh grants, 2.61–2.74 against 2.38–2.42 ms of CPU per grant and
352–361 against 383–400 grants/s (bench/login.py, SQLite, alternating three times).

The pool has as many threads as the database pool has connections: a request's work holds one
connection throughout, and more threads would only wait for one while competing for the lock with
those that have one. The caller's context variables (its request id and partner, for log lines)
go along. Unlike anyio, a cancelled caller does not wait for its thread: the work runs to its end
(and commits or rolls back) on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["in_thread", "request_threads", "shut_down_request_threads"]

T = TypeVar("T")


def request_threads(state: Any) -> ThreadPoolExecutor:
    """The pool kept in an application's ``app.state`` (sized by its settings), made on first use."""
    pool: ThreadPoolExecutor | None = getattr(state, "request_threads", None)
    if pool is None:
        pool = ThreadPoolExecutor(max_workers=state.settings.database_pool_size, thread_name_prefix="entente-request")
        state.request_threads = pool
    return pool


def shut_down_request_threads(state: Any) -> None:
    """At the app's shutdown: no new work; threads still running finish on their own."""
    pool: ThreadPoolExecutor | None = getattr(state, "request_threads", None)
    if pool is not None:
        state.request_threads = None
        pool.shutdown(wait=False)


async def in_thread(state: Any, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in the pool of the app whose ``state`` this is, with the caller's context."""
    call = functools.partial(function, **kwargs) if kwargs else function
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(request_threads(state), context.run, call, *args)
