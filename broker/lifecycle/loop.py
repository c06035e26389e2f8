"""The shape every background sender shares: rounds back to back while there is work, else sleep until
a local commit wakes it or the safety-net poll interval passes; errors are logged and the loop goes on.

The delivery worker (broker.lifecycle.worker) and the back-channel logout sender
(broker.provider.logout) are both this loop around their own ``run_once``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import Engine

from broker.settings import Settings

__all__ = ["BackgroundLoop", "WakeSource"]

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
            while not stop.is_set():
                self._wake.clear()
                try:
                    if await self.run_once():
                        continue
                except Exception:
                    self._log.exception("background round failed; retrying after the poll interval")
                await _first(self._wake.wait(), stop.wait(), timeout=self.settings.delivery_poll_seconds)
        finally:
            unsubscribe(self._wake_threadsafe)
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this loop made it."""
        if self._owns_http and self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
            self._http = None


async def _first(*waits: Awaitable[Any], timeout: float) -> None:
    """Return when any of ``waits`` finishes or ``timeout`` passes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
