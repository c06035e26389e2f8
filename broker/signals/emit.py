"""Which SETs a session kill queues, and for whom; written in the kill's own transaction.

A person whose sessions are killed (a leaver, the kill switch: ``broker.provider.revocation.revoke_person``)
gets, on every stream of every client that ever received an ID token for them, a CAEP
``session-revoked`` and a RISC ``account-disabled`` SET, both with the ``iss_sub`` subject that
client saw (``iss`` = Entente's OIDC issuer, ``sub`` = the person's SCIM id) and one ``txn``.
A client that never saw the person is told nothing: a neutral broker does not tell one workspace
about another's people. Disabled streams get nothing (SSF §8.1.2: nothing is held for them);
paused ones hold what they get until resumed. A commit that queued SETs wakes this process's push
sender at once.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, col, select

from broker.commit_signal import CommitSignal
from broker.provider.models import TokenFamily
from broker.signals.models import SecurityEvent, SignalStream
from broker.signals.set import ACCOUNT_DISABLED, SESSION_REVOKED, VERIFICATION

__all__ = ["queue_person_signals", "queue_verification", "subscribe", "unsubscribe"]

_TABLE = SecurityEvent.__table__  # type: ignore[attr-defined]
_QUEUED = CommitSignal("SETs queued")
_REASONS = {
    "left": "The person left: their partner deprovisioned them, and every Entente session and token ended.",
    "kill_switch": "An Entente operator ended every session and token of the person (kill switch).",
}

subscribe = _QUEUED.subscribe
"""Call a callback (thread-safe, non-blocking) after each commit that queued SETs."""
unsubscribe = _QUEUED.unsubscribe


def _row(
    stream_id: str,
    *,
    txn: str,
    event_type: str,
    event_claims: dict[str, Any],
    now: dt.datetime,
    subject_format: str,
    subject: str,
    partner_id: str | None,
) -> dict[str, Any]:
    return {
        "jti": secrets.token_urlsafe(18),
        "txn": txn,
        "stream_id": stream_id,
        "event_type": event_type,
        "event": event_claims,
        "subject_format": subject_format,
        "subject": subject,
        "partner_id": partner_id,
        "state": "pending",
        "attempts": 0,
        "not_before": now,
        "queued_at": now,
    }


def _person_events(reason: str, now: dt.datetime) -> list[tuple[str, dict[str, Any]]]:
    """The two events of a kill: CAEP §3.1 with its common claims (CAEP §2), RISC §2.2 without a reason.

    RISC's ``reason`` for account-disabled is only ``hijacking`` or ``bulk-account``; neither is
    what a leaver or a kill switch knows, so it is left out rather than guessed.
    """
    revoked = {
        "event_timestamp": int(now.timestamp()),
        "initiating_entity": "admin" if reason in _REASONS else "system",
        "reason_admin": {"en": _REASONS.get(reason, f"Every Entente session of the person ended ({reason}).")},
    }
    return [(SESSION_REVOKED, revoked), (ACCOUNT_DISABLED, {})]


def queue_person_signals(session: Session, *, partner_id: str, subject_id: str, reason: str, now: dt.datetime) -> int:
    """Queue both events on every live stream of every client that saw the person; returns how many SETs.

    The caller commits (the SETs exist only if the kill did). Idempotence is the caller's: call it
    once per kill that ended something.
    """
    seen_by = select(TokenFamily.client_id).where(
        TokenFamily.partner_id == partner_id, TokenFamily.subject_id == subject_id
    )
    streams = session.exec(
        select(SignalStream.stream_id, SignalStream.events_requested)
        .where(col(SignalStream.client_id).in_(seen_by), SignalStream.status != "disabled")
        .order_by(col(SignalStream.stream_id))
    ).all()
    txn = uuid.uuid4().hex
    events = _person_events(reason, now)
    rows = [
        _row(
            stream_id,
            txn=txn,
            event_type=event_type,
            event_claims=claims,
            now=now,
            subject_format="iss_sub",
            subject=subject_id,
            partner_id=partner_id,
        )
        for stream_id, requested in streams
        for event_type, claims in events
        if event_type in requested
    ]
    if rows:
        session.execute(insert(_TABLE), rows)
        _QUEUED.mark(session)
    return len(rows)


def queue_verification(session: Session, *, stream: SignalStream, state: str | None, now: dt.datetime) -> str:
    """Queue the SSF §8.1.4.1 verification event (subject: the stream, ``opaque``); returns its jti."""
    claims = {"state": state} if state is not None else {}
    row = _row(
        stream.stream_id,
        txn=uuid.uuid4().hex,
        event_type=VERIFICATION,
        event_claims=claims,
        now=now,
        subject_format="opaque",
        subject=stream.stream_id,
        partner_id=None,
    )
    session.execute(insert(_TABLE), [row])
    _QUEUED.mark(session)
    return str(row["jti"])
