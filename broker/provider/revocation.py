"""Session kill: when a person leaves (or logs out), their sessions, tokens and relying-party sessions end.

``revoke_person`` is what the lifecycle engine calls for a person who became inactive or was
deleted (``reconcile_subjects``); it writes in the engine's transaction, so the grants' removal and
the session kill commit together:

1. every live LoginSession of the person ends (broker.sessions ``end_sessions``, reason ``left``);
2. every token family of the person is revoked with its access tokens (refresh fails at once,
   introspection and UserInfo answer inactive at once);
3. a back-channel logout (OIDC Back-Channel Logout 1.0 §2.5) is queued for every (client, sid)
   where the person had a session, and the logout sender is woken at commit;
4. Shared Signals SETs (CAEP session-revoked, RISC account-disabled) are queued for every stream
   of every client that saw the person (broker.signals.emit), and the push sender is woken at commit.

All four are idempotent: a person with nothing live left costs two queries and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.provider.logout import queue_logouts
from broker.provider.models import TokenFamily
from broker.provider.tokens import revoke_families
from broker.sessions.models import LoginSession
from broker.sessions.service import end_sessions
from broker.signals.emit import queue_person_signals
from broker.types import utcnow

__all__ = ["Revocation", "end_login_session", "revoke_people", "revoke_person"]

_PROVIDER = Actor(kind="system", id="oidc-provider")
_SESSIONS = LoginSession.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Revocation:
    """What one kill ended: login sessions, token families, logout notifications and SETs queued."""

    sessions: int
    families: int
    logouts: int
    signals: int = 0
    """Shared Signals SETs queued (broker.signals.emit), for a person-wide kill only."""


def _revoke_families_and_notify(
    session: Session,
    *,
    families: list[TokenFamily],
    ended_sessions: set[str],
    partner_id: str,
    subject_id: str,
    reason: str,
    now: dt.datetime,
) -> Revocation:
    live = [f.id for f in families if f.revoked_at is None]
    revoked = revoke_families(session, family_ids=live, reason=reason, now=now)
    told = [(f.client_id, f.session_id) for f in families if f.revoked_at is None or f.session_id in ended_sessions]
    logouts = queue_logouts(session, targets=told, partner_id=partner_id, subject_id=subject_id, reason=reason, now=now)
    result = Revocation(sessions=len(ended_sessions), families=revoked, logouts=logouts)
    if result.sessions or result.families:
        append_audit(
            session,
            actor=_PROVIDER,
            action="oidc.sessions_revoked",
            partner_id=partner_id,
            resource_type="User",
            resource_id=subject_id,
            detail={"reason": reason, "sessions": result.sessions, "families": revoked, "logouts": logouts},
        )
    return result


def revoke_person(
    session: Session, *, partner_id: str, subject_id: str, reason: str, now: dt.datetime | None = None
) -> Revocation:
    """End every session and token of one person and queue their back-channel logouts; the caller commits."""
    now = now or utcnow()
    ended = {s.id for s in end_sessions(session, partner_id=partner_id, subject_id=subject_id, reason=reason)}
    families = list(
        session.exec(
            select(TokenFamily).where(
                TokenFamily.partner_id == partner_id,
                TokenFamily.subject_id == subject_id,
                or_(col(TokenFamily.revoked_at).is_(None), col(TokenFamily.session_id).in_(ended)),
            )
        ).all()
    )
    result = _revoke_families_and_notify(
        session,
        families=families,
        ended_sessions=ended,
        partner_id=partner_id,
        subject_id=subject_id,
        reason=reason,
        now=now,
    )
    if result.sessions or result.families:  # Shared Signals: CAEP session-revoked + RISC account-disabled
        signals = queue_person_signals(session, partner_id=partner_id, subject_id=subject_id, reason=reason, now=now)
        result = replace(result, signals=signals)
    return result


def revoke_people(session: Session, *, partner_id: str, subject_ids: Iterable[str], reason: str) -> int:
    """``revoke_person`` for each of these people who still has a live session or token; returns how many.

    Two queries find them, so the engine can pass every inactive person of a batch cheaply.
    """
    ids = sorted(set(subject_ids))
    if not ids:
        return 0
    with_sessions = session.exec(
        select(LoginSession.subject_id).where(
            LoginSession.partner_id == partner_id,
            col(LoginSession.subject_id).in_(ids),
            col(LoginSession.ended_at).is_(None),
        )
    ).all()
    with_tokens = session.exec(
        select(TokenFamily.subject_id).where(
            TokenFamily.partner_id == partner_id,
            col(TokenFamily.subject_id).in_(ids),
            col(TokenFamily.revoked_at).is_(None),
        )
    ).all()
    touched = sorted(set(with_sessions) | set(with_tokens))
    now = utcnow()
    for subject_id in touched:
        revoke_person(session, partner_id=partner_id, subject_id=subject_id, reason=reason, now=now)
    return len(touched)


def end_login_session(session: Session, *, session_id: str, reason: str, now: dt.datetime | None = None) -> Revocation:
    """End one login session (RP-initiated logout) and what relying parties made from it; the caller commits."""
    now = now or utcnow()
    login = session.get(LoginSession, session_id)
    if login is None:
        return Revocation(0, 0, 0)
    result = session.execute(
        update(_SESSIONS)
        .where(_SESSIONS.c.id == session_id, _SESSIONS.c.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    )
    ended = {session_id} if result.rowcount == 1 else set()  # type: ignore[attr-defined]
    families = list(session.exec(select(TokenFamily).where(TokenFamily.session_id == session_id)).all())
    return _revoke_families_and_notify(
        session,
        families=families,
        ended_sessions=ended,
        partner_id=login.partner_id,
        subject_id=login.subject_id,
        reason=reason,
        now=now,
    )
