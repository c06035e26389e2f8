"""RFC 8936 poll delivery: the receiver POSTs to its stream's poll URL, acknowledging what it has and
getting what it has not; a SET is kept until its ``jti`` is acknowledged (§2.4).

One request, one transaction: acknowledgements (``ack``) and refusals (``setErrs``, §2.4.4) of the
stream's own SETs are recorded first, then up to ``maxEvents`` unacknowledged SETs are signed and
returned, oldest first, with ``moreAvailable`` when more are waiting. A SET returned but never
acknowledged is returned again by the next poll (the receiver drops repeats by ``jti``). Long
polling (``returnImmediately`` false) is the HTTP edge's: it calls ``fetch`` again when a commit
queues SETs or the poll interval passes. A paused stream returns nothing and keeps everything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.provider.keys import key_ring
from broker.settings import Settings
from broker.signals.models import SecurityEvent, SignalStream
from broker.signals.set import signed_set

__all__ = ["MAX_EVENTS", "PollResult", "SetError", "acknowledge", "fetch"]

MAX_EVENTS = 100
"""Most SETs one poll returns, whatever ``maxEvents`` asks (RFC 8936 §2.4.1 lets the transmitter cap it)."""
_TABLE = SecurityEvent.__table__  # type: ignore[attr-defined]
_UNACKED = ("pending", "running")


@dataclass(frozen=True)
class SetError:
    """A receiver's refusal of one SET (RFC 8936 §2.4.4, error codes of RFC 8935 §2.3)."""

    err: str
    description: str


@dataclass(frozen=True)
class PollResult:
    sets: dict[str, str]
    """jti -> the signed SET."""
    more_available: bool


def acknowledge(
    session: Session,
    *,
    stream: SignalStream,
    ack: Sequence[str],
    set_errs: Mapping[str, SetError],
    now: dt.datetime,
) -> int:
    """Mark the stream's acknowledged SETs delivered and refused ones rejected; returns how many changed.

    A ``jti`` of another stream, unknown, or already settled is ignored (a repeated ack is harmless).
    """
    changed = 0
    mine = (_TABLE.c.stream_id == stream.stream_id, _TABLE.c.state.in_(_UNACKED))
    if ack:
        changed += session.execute(
            update(_TABLE)
            .where(_TABLE.c.jti.in_(sorted(set(ack))), *mine)
            .values(state="delivered", delivered_at=now, lease_until=None, last_error=None)
        ).rowcount  # type: ignore[attr-defined]
    for jti, error in sorted(set_errs.items()):
        changed += session.execute(
            update(_TABLE)
            .where(_TABLE.c.jti == jti, *mine)
            .values(state="rejected", lease_until=None, last_error=f"{error.err}: {error.description}"[:1000])
        ).rowcount  # type: ignore[attr-defined]
    if changed:
        append_audit(
            session,
            actor=Actor(kind="oidc_client", id=stream.client_id),
            action="ssf.sets_acknowledged",
            partner_id=None,
            resource_type="SignalStream",
            resource_id=stream.stream_id,
            detail={
                "acknowledged": sorted(set(ack)),
                "errors": {jti: f"{e.err}: {e.description}"[:300] for jti, e in sorted(set_errs.items())},
                "changed": changed,
            },
        )
    return changed


def fetch(session: Session, *, settings: Settings, stream: SignalStream, max_events: int) -> PollResult:
    """Up to ``max_events`` (capped at ``MAX_EVENTS``) unacknowledged SETs of the stream, signed now."""
    if stream.status != "enabled" or max_events <= 0:
        return PollResult({}, False)
    limit = min(max_events, MAX_EVENTS)
    rows = session.exec(
        select(SecurityEvent)
        .where(SecurityEvent.stream_id == stream.stream_id, col(SecurityEvent.state).in_(_UNACKED))
        .order_by(col(SecurityEvent.id))
        .limit(limit + 1)
    ).all()
    if not rows:
        return PollResult({}, False)
    keys = key_ring(session, settings=settings)
    sets = {row.jti: signed_set(row, settings=settings, keys=keys, audience=stream.client_id) for row in rows[:limit]}
    return PollResult(sets, len(rows) > limit)
