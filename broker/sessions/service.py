"""Start, find and end login sessions. Cookies carry 256 random bits; only their SHA-256 is stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, col, select

from broker.federation.base import FederatedIdentity
from broker.sessions.models import LoginSession
from broker.types import utcnow

__all__ = ["COOKIE_NAME", "StartedSession", "end_sessions", "find_session", "start_session"]

COOKIE_NAME = "entente_session"
_TABLE = LoginSession.__table__  # type: ignore[attr-defined]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StartedSession:
    """The row and the cookie value (shown once, to set the cookie)."""

    row: LoginSession
    cookie_value: str


def start_session(
    session: Session, *, identity: FederatedIdentity, subject_id: str, lifetime: dt.timedelta
) -> StartedSession:
    """Record a login of ``subject_id`` (already bound and checked active) in the caller's transaction."""
    secret = secrets.token_urlsafe(32)
    row = LoginSession(
        secret_sha256=_sha256(secret),
        partner_id=identity.tenant_id,
        subject_id=subject_id,
        upstream_issuer=identity.issuer,
        upstream_subject=identity.subject,
        upstream_session=identity.session_ref,
        expires_at=utcnow() + lifetime,
    )
    session.add(row)
    session.flush()
    return StartedSession(row=row, cookie_value=secret)


def find_session(session: Session, *, cookie_value: str | None) -> LoginSession | None:
    """The live session a cookie names, or ``None`` (unknown, ended or expired)."""
    if not cookie_value or len(cookie_value) > 128:
        return None
    digest = _sha256(cookie_value)
    row = session.exec(select(LoginSession).where(LoginSession.secret_sha256 == digest)).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, digest):
        return None
    if row.ended_at is not None or row.expires_at <= utcnow():
        return None
    return row


def end_sessions(session: Session, *, partner_id: str, subject_id: str, reason: str) -> list[LoginSession]:
    """End every live session of a person in the caller's transaction; returns those it ended."""
    now = utcnow()
    live = list(
        session.exec(
            select(LoginSession).where(
                LoginSession.partner_id == partner_id,
                LoginSession.subject_id == subject_id,
                col(LoginSession.ended_at).is_(None),
            )
        ).all()
    )
    if live:
        session.execute(
            update(_TABLE).where(_TABLE.c.id.in_([s.id for s in live])).values(ended_at=now, end_reason=reason)
        )
    return live
