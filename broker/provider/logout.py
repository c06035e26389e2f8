"""OpenID Connect Back-Channel Logout 1.0: logout tokens (§2.4), queued durably, POSTed to each RP (§2.5).

A notification is written in the same transaction that ends the session (a leaver, a logout), so
an ended session is never left without its logouts. ``LogoutSender`` (run by `entente serve`)
delivers them: it is woken the moment such a transaction commits in this process, and polls every
``delivery_poll_seconds`` for work committed by other processes or due for retry.

Delivery (§2.5, §2.8): ``POST backchannel_logout_uri`` with ``logout_token=<JWT>`` as
``application/x-www-form-urlencoded``. 200/204: delivered. 400 or another 4xx: the RP refused the
token for good (dead, audited). 408, 429, 5xx and transport errors: retried with full-jitter
exponential backoff (``delivery_backoff_seconds`` …), dead after ``delivery_max_attempts``.

Why not the delivery outbox (broker.lifecycle.outbox): its tasks are per (workspace, person),
ordered behind that pair's provisioning, held while the workspace is paused, and executed by
connectors. A logout is per (client, sid), is signed with the provider's key, and must overtake
everything queued for the workspace, so it has its own small table and sender.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from joserfc import jwt
from sqlalchemy import Engine, insert, update
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.commit_signal import CommitSignal
from broker.lifecycle.loop import LeasedSender, Outcome, lease_due
from broker.provider.discovery import issuer_of
from broker.provider.keys import ALGORITHM, LOGOUT_TOKEN_SECONDS, KeyRing, key_ring
from broker.provider.models import LogoutNotification, OAuthClient
from broker.settings import Settings
from broker.types import utcnow

__all__ = [
    "BACKCHANNEL_EVENT",
    "LOGOUT_TOKEN_TYPE",
    "LogoutSender",
    "logout_token",
    "queue_logouts",
    "subscribe",
    "unsubscribe",
]

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPE = "logout+jwt"  # noqa: S105 - a JOSE typ, not a secret
_TABLE = LogoutNotification.__table__  # type: ignore[attr-defined]
_SENDER = Actor(kind="system", id="oidc-logout-sender")
_QUEUED = CommitSignal("OIDC logouts queued")
log = logging.getLogger("entente.oidc.logout")

subscribe = _QUEUED.subscribe
"""Call a callback (thread-safe, non-blocking) after each commit that queued logouts."""
unsubscribe = _QUEUED.unsubscribe


def queue_logouts(
    session: Session,
    *,
    targets: Iterable[tuple[str, str]],
    partner_id: str,
    subject_id: str,
    reason: str,
    now: dt.datetime,
) -> int:
    """Queue one logout per (client_id, sid) whose client has a ``backchannel_logout_uri``; returns how many."""
    pairs = sorted(set(targets))
    if not pairs:
        return 0
    listening = set(
        session.exec(
            select(OAuthClient.client_id).where(
                col(OAuthClient.client_id).in_({client for client, _ in pairs}),
                col(OAuthClient.backchannel_logout_uri).is_not(None),
            )
        ).all()
    )
    rows = [
        {
            "jti": secrets.token_urlsafe(18),
            "client_id": client_id,
            "partner_id": partner_id,
            "subject_id": subject_id,
            "sid": sid,
            "reason": reason,
            "state": "pending",
            "attempts": 0,
            "not_before": now,
            "queued_at": now,
        }
        for client_id, sid in pairs
        if client_id in listening
    ]
    if rows:
        session.execute(insert(_TABLE), rows)
        _QUEUED.mark(session)
    return len(rows)


def logout_token(
    keys: KeyRing, *, issuer: str, client_id: str, subject_id: str, sid: str, jti: str, now: dt.datetime
) -> str:
    """A Logout Token (§2.4): ``typ: logout+jwt``, ``sub`` and ``sid``, the back-channel event, never ``nonce``."""
    iat = int(now.timestamp())
    claims = {
        "iss": issuer,
        "aud": client_id,
        "iat": iat,
        "exp": iat + LOGOUT_TOKEN_SECONDS,
        "jti": jti,
        "sub": subject_id,
        "sid": sid,
        "events": {BACKCHANNEL_EVENT: {}},
    }
    return jwt.encode(keys.header(LOGOUT_TOKEN_TYPE), claims, keys.signing, algorithms=[ALGORITHM])


@dataclass(frozen=True)
class _Claimed:
    id: int
    jti: str
    client_id: str
    partner_id: str
    subject_id: str
    sid: str
    attempts: int
    uri: str | None
    token: str


class LogoutSender(LeasedSender[_Claimed]):
    """Delivers queued logout tokens; ``run`` until ``stop`` is set (one per `entente serve` process).

    A notification that fails for good (``Outcome.retry_in`` ``None``) is buried: state ``dead``.
    """

    def __init__(self, *, engine: Engine, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(engine=engine, settings=settings, http=http, wake_source=(subscribe, unsubscribe), log=log)

    def _claim(self, limit: int = 50) -> list[_Claimed]:
        now = utcnow()
        lease = dt.timedelta(seconds=self.settings.delivery_lease_seconds)
        with Session(self.engine, expire_on_commit=False) as session:
            ids = lease_due(session, _TABLE, now=now, lease=lease, limit=limit)
            if not ids:
                return []
            rows = session.exec(
                select(LogoutNotification, OAuthClient.backchannel_logout_uri)
                .join(OAuthClient, col(OAuthClient.client_id) == col(LogoutNotification.client_id))
                .where(col(LogoutNotification.id).in_(ids))
                .order_by(col(LogoutNotification.id))
            ).all()
            keys = key_ring(session, settings=self.settings, now=now)
            issuer = issuer_of(self.settings)
            claimed = [
                _Claimed(
                    id=note.id or 0,
                    jti=note.jti,
                    client_id=note.client_id,
                    partner_id=note.partner_id,
                    subject_id=note.subject_id,
                    sid=note.sid,
                    attempts=note.attempts,
                    uri=uri,
                    token=logout_token(
                        keys,
                        issuer=issuer,
                        client_id=note.client_id,
                        subject_id=note.subject_id,
                        sid=note.sid,
                        jti=note.jti,
                        now=now,
                    ),
                )
                for note, uri in rows
            ]
            session.commit()
        return claimed

    def _retry(self, note: _Claimed, detail: str) -> Outcome:
        if note.attempts >= self.settings.delivery_max_attempts:
            return Outcome(False, f"{detail} (gave up after {note.attempts} attempts)", None)
        return Outcome(False, detail, self._backoff(note.attempts))

    async def _deliver(self, note: _Claimed) -> Outcome:
        if note.uri is None:
            return Outcome(False, "the client no longer has a backchannel_logout_uri", None)
        assert self._http is not None
        try:
            response = await self._http.post(
                note.uri,
                data={"logout_token": note.token},
                headers={"Accept": "application/json"},
                timeout=self.settings.delivery_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            return self._retry(note, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if status in (200, 204):
            return Outcome(True, str(status), None)
        detail = f"HTTP {status}: {response.text[:300]}"
        if status in (408, 429) or status >= 500:
            return self._retry(note, detail)
        return Outcome(False, detail, None)

    def _record(self, results: list[tuple[_Claimed, Outcome]]) -> None:
        now = utcnow()
        with Session(self.engine) as session:
            for note, outcome in results:
                values = outcome.row_values(now=now, failed="dead")
                session.execute(update(_TABLE).where(_TABLE.c.id == note.id).values(lease_until=None, **values))
                if outcome.delivered or outcome.retry_in is None:
                    append_audit(
                        session,
                        actor=_SENDER,
                        action="oidc.backchannel_logout" if outcome.delivered else "oidc.backchannel_logout_failed",
                        partner_id=note.partner_id,
                        resource_type="OAuthClient",
                        resource_id=note.client_id,
                        detail={
                            "subject_id": note.subject_id,
                            "sid": note.sid,
                            "jti": note.jti,
                            "attempt": note.attempts,
                            "result": outcome.detail[:300],
                        },
                    )
            session.commit()
