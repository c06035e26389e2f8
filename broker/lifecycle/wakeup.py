"""Wake the delivery worker the moment a transaction that recorded lifecycle events commits.

No fixed polling delay sits in the latency path: ``record_event`` marks the session (``mark``), and
the commit calls every subscribed worker of this process (broker.commit_signal). Workers in other
processes find the work on their next safety-net poll (``ENTENTE_DELIVERY_POLL_SECONDS``).
"""

from __future__ import annotations

from broker.commit_signal import CommitSignal

__all__ = ["mark", "notify", "subscribe", "unsubscribe"]

_EVENTS = CommitSignal("lifecycle events recorded")

mark = _EVENTS.mark
"""Wake the workers when this session's transaction commits (``record_event``, the kill switch)."""
subscribe = _EVENTS.subscribe
unsubscribe = _EVENTS.unsubscribe
notify = _EVENTS.notify
"""Wake every subscriber now (after enqueueing tasks outside the engine)."""
