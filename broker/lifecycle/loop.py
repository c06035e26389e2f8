"""The shape every background sender shares: rounds back to back while there is work, else sleep until
a local commit wakes it or the safety-net poll interval passes; errors are logged and the loop goes on.

The delivery worker (broker.lifecycle.worker) is this loop around its own ``run_once``. The
back-channel logout sender (broker.provider.logout) and the SET push sender (broker.signals.push)
are a ``LeasedSender``: each round leases a batch of due rows of their queue table (``lease_due``),
delivers them concurrently and records each ``Outcome`` (``Outcome.row_values``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from sqlalchemy import ColumnElement, Engine, Table, and_, or_, select, update
from sqlalchemy.orm import Session

from broker.settings import Settings

__all__ = ["BackgroundLoop", "LeasedSender", "Outcome", "WakeSource", "lease_due"]

Callback = Callable[[], None]
WakeSource = tuple[Callable[[Callback], None], Callable[[Callback], None]]
"""(subscribe, unsubscribe) of the commit hook that should wake the loop."""


class BackgroundLoop(ABC):
    """Subclasses give ``run_once`` (returns how many items it attempted) and a wake source."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        http: httpx.AsyncClient | None,
        wake_source: WakeSource,
        log: logging.Logger,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self._http = http
        self._owns_http = http is None
        self._wake_source = wake_source
        self._log = log
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @abstractmethod
    async def run_once(self) -> int:
        """One round of work; returns how many items it attempted (0 = nothing due: sleep)."""

    def _ensure_http(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.delivery_timeout_seconds)
            self._owns_http = True

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; an unexpected error is logged and the loop goes on."""
        self._loop = asyncio.get_running_loop()
        self._ensure_http()
        subscribe, unsubscribe = self._wake_source
        subscribe(self._wake_threadsafe)
        try:
            spacing = self.settings.delivery_wake_spacing_ms / 1000
            while not stop.is_set():
                self._wake.clear()
                began = time.monotonic()
                try:
                    if await self.run_once():
                        continue
                except Exception:
                    self._log.exception("background round failed; retrying after the poll interval")
                await _first(self._wake.wait(), stop.wait(), timeout=self.settings.delivery_poll_seconds)
                # Woken by a commit soon after the last round began: let more commits gather first, so a
                # stream of SCIM writes costs one round per ``spacing``, not one per write. A change
                # after a quiet spell waits for nothing.
                rest = spacing - (time.monotonic() - began)
                if rest > 0 and not stop.is_set():
                    await _first(stop.wait(), timeout=rest)
        finally:
            unsubscribe(self._wake_threadsafe)
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this loop made it."""
        if self._owns_http and self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
            self._http = None


@dataclass(frozen=True)
class Outcome:
    """How one delivery attempt ended."""

    delivered: bool
    detail: str
    """The HTTP status, or why it failed (stored as ``last_error``, audited when final)."""
    retry_in: float | None
    """Seconds until the next attempt; ``None`` with ``delivered`` False: failed for good."""

    def row_values(self, *, now: dt.datetime, failed: str) -> dict[str, object]:
        """The queue row's new columns: ``delivered``, ``pending`` until ``now + retry_in``, else ``failed``."""
        if self.delivered:
            return {"state": "delivered", "delivered_at": now, "last_error": None}
        if self.retry_in is not None:
            return {
                "state": "pending",
                "not_before": now + dt.timedelta(seconds=self.retry_in),
                "last_error": self.detail[:1000],
            }
        return {"state": failed, "last_error": self.detail[:1000]}


def lease_due(
    session: Session, table: Table, *where: ColumnElement[bool], now: dt.datetime, lease: dt.timedelta, limit: int
) -> list[int]:
    """Lease up to ``limit`` due rows of a queue ``table``, oldest first, in the caller's transaction.

    Due: ``pending`` with ``not_before`` passed, or ``running`` under an expired ``lease_until``
    (a sender died mid-delivery), and matching ``where``. They become ``running`` until
    ``now + lease`` with one more ``attempts``; their ids are returned. ``[]``: nothing is due and
    the transaction was rolled back. On PostgreSQL the rows are taken ``FOR UPDATE SKIP LOCKED``, so
    several processes share the queue.
    """
    due = or_(
        and_(table.c.state == "pending", table.c.not_before <= now),
        and_(table.c.state == "running", table.c.lease_until < now),
    )
    query = select(table.c.id).where(due, *where).order_by(table.c.id).limit(limit)
    if session.get_bind().dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True, of=table)
    ids = [row[0] for row in session.execute(query)]
    if not ids:
        session.rollback()
        return []
    session.execute(
        update(table)
        .where(table.c.id.in_(ids))
        .values(state="running", lease_until=now + lease, attempts=table.c.attempts + 1)
    )
    return ids


Item = TypeVar("Item")


class LeasedSender(BackgroundLoop, Generic[Item]):
    """A round leases a batch (``_claim``), delivers each item concurrently (``_deliver``) and stores
    every outcome in one transaction (``_record``)."""

    @abstractmethod
    def _claim(self) -> list[Item]:
        """Lease a batch of due items in a transaction of its own (``lease_due``); ``[]``: nothing due."""

    @abstractmethod
    async def _deliver(self, item: Item) -> Outcome:
        """One attempt; a refusal or a transport error is an ``Outcome``, not an exception."""

    @abstractmethod
    def _record(self, results: list[tuple[Item, Outcome]]) -> None:
        """Store each outcome on its row (``Outcome.row_values``) and audit the final ones; commits."""

    def _backoff(self, attempts: int, floor: float = 0.0) -> float:
        """Seconds to wait after ``attempts`` attempts: random in [ceiling / 2, ceiling], the ceiling doubling
        from ``delivery_backoff_seconds`` up to ``delivery_backoff_max_seconds``; never below ``floor``."""
        ceiling = min(
            self.settings.delivery_backoff_max_seconds,
            self.settings.delivery_backoff_seconds * (2 ** max(0, attempts - 1)),
        )
        return max(floor, random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not a secret

    async def run_once(self) -> int:
        """Claim, deliver and record one batch; returns how many items were attempted."""
        self._ensure_http()
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._deliver(item) for item in claimed))
        await asyncio.to_thread(self._record, list(zip(claimed, outcomes, strict=True)))
        return len(claimed)


async def _first(*waits: Awaitable[Any], timeout: float) -> None:
    """Return when any of ``waits`` finishes or ``timeout`` passes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
