"""Wake this process's background senders the moment a transaction that queued work for them commits.

A service that writes work in the caller's transaction marks the session (``signal.mark(session)``);
one ``after_commit`` hook then calls every callback subscribed to each signal marked in that
transaction, and a rollback drops the marks (no wake-up for work that does not exist). Only this
process hears a signal: senders elsewhere find the work on their safety-net poll
(``delivery_poll_seconds``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["CommitSignal"]

_MARKS = "entente.commit_signals"
"""Key in ``Session.info``: the set of signals marked in the open transaction."""


class CommitSignal:
    """A named wake-up, fired after each commit of a transaction marked with it."""

    def __init__(self, name: str) -> None:
        self.name = name
        """What the work is, for reading (``repr``) only: signals are told apart by identity."""
        self._subscribers: set[Callable[[], None]] = set()

    def __repr__(self) -> str:
        return f"CommitSignal({self.name!r})"

    def mark(self, session: Session) -> None:
        """Fire this signal when ``session``'s transaction commits; idempotent, undone by a rollback."""
        session.info.setdefault(_MARKS, set()).add(self)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (thread-safe, non-blocking) after each commit marked with this signal."""
        self._subscribers.add(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; nothing if it was not subscribed."""
        self._subscribers.discard(callback)

    def notify(self) -> None:
        """Call every subscriber now (for work written without a marked session)."""
        for callback in list(self._subscribers):
            callback()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    for signal in session.info.pop(_MARKS, ()):
        signal.notify()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_MARKS, None)
