"""Wake the delivery worker the moment a transaction that recorded lifecycle events commits.

No fixed polling delay sits in the latency path: ``record_event`` marks the session, and an
``after_commit`` hook calls every subscribed worker of this process. Workers in other processes
find the work on their next safety-net poll (``ENTENTE_DELIVERY_POLL_SECONDS``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["MARK", "notify", "subscribe", "unsubscribe"]

MARK = "entente.lifecycle_events"
"""Key in ``Session.info`` set by ``record_event``."""

_subscribers: set[Callable[[], None]] = set()


def subscribe(callback: Callable[[], None]) -> None:
    """Call ``callback`` (thread-safe, non-blocking) after each commit that recorded events."""
    _subscribers.add(callback)


def unsubscribe(callback: Callable[[], None]) -> None:
    _subscribers.discard(callback)


def notify() -> None:
    """Wake every subscriber now (also used after enqueueing tasks outside the engine)."""
    for callback in list(_subscribers):
        callback()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(MARK, False):
        notify()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(MARK, None)
