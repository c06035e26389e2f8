"""RFC 8935 push delivery: each queued SET is POSTed to its stream's ``endpoint_url`` until it is accepted.

``SignalSender`` (run by `entente serve`) is woken the moment a transaction that queued SETs commits
in this process, and polls every ``delivery_poll_seconds`` for SETs from other processes or due
for a retry. It claims due SETs of enabled push streams under a lease (``FOR UPDATE SKIP LOCKED``
on PostgreSQL, so several processes share the work), signs each with the provider's current key,
and POSTs it (RFC 8935 §2): ``Content-Type: application/secevent+jwt``, ``Accept:
application/json``, and the stream's ``authorization_header`` if it gave one.

    202 (any 2xx)           delivered; the row keeps ``delivered_at`` as the receipt
    400 {"err", …}          the receiver refused this SET for good (RFC 8935 §2.3): ``rejected``, audited
    anything else, or none  retried with full-jitter exponential backoff (``delivery_backoff_seconds`` up to
                            ``delivery_backoff_max_seconds``, never sooner than ``Retry-After``), with no
                            attempt limit: a SET is never dropped because its receiver was down or
                            misconfigured (401/403/404 are fixed by updating the stream)

A sender killed mid-delivery loses nothing: the lease runs out and the SET is sent again with the
same ``jti``, which the receiver uses to drop the repeat.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import httpx
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.lifecycle.loop import LeasedSender, Outcome, lease_due
from broker.provider.keys import key_ring
from broker.settings import Settings
from broker.signals.emit import subscribe, unsubscribe
from broker.signals.models import SecurityEvent, SignalStream
from broker.signals.set import SET_MEDIA_TYPE, signed_set
from broker.signals.streams import PUSH, authorization_of
from broker.types import utcnow

__all__ = ["SignalSender"]

_TABLE = SecurityEvent.__table__  # type: ignore[attr-defined]
_STREAMS = SignalStream.__table__  # type: ignore[attr-defined]
_SENDER = Actor(kind="system", id="ssf-push-sender")
_MAX_RETRY_AFTER = 3600.0
log = logging.getLogger("entente.signals.push")


@dataclass(frozen=True)
class _Claimed:
    id: int
    jti: str
    stream_id: str
    client_id: str
    partner_id: str | None
    event_type: str
    attempts: int
    url: str
    authorization: str | None
    token: str


def _retry_after(response: httpx.Response) -> float:
    """``Retry-After`` in seconds (delta form; an HTTP date or garbage counts as 0), at most an hour."""
    try:
        return min(_MAX_RETRY_AFTER, max(0.0, float(response.headers.get("retry-after", "0"))))
    except ValueError:
        return 0.0


class SignalSender(LeasedSender[_Claimed]):
    """Pushes queued SETs; ``run`` until ``stop`` is set (one per `entente serve` process).

    A SET that fails for good (``Outcome.retry_in`` ``None``) was refused by its receiver: ``rejected``.
    """

    def __init__(self, *, engine: Engine, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(engine=engine, settings=settings, http=http, wake_source=(subscribe, unsubscribe), log=log)

    def _claim(self, limit: int = 100) -> list[_Claimed]:
        now = utcnow()
        lease = dt.timedelta(seconds=self.settings.delivery_lease_seconds)
        with Session(self.engine, expire_on_commit=False) as session:
            pushing = select(_STREAMS.c.stream_id).where(
                _STREAMS.c.delivery_method == PUSH, _STREAMS.c.status == "enabled"
            )
            ids = lease_due(session, _TABLE, _TABLE.c.stream_id.in_(pushing), now=now, lease=lease, limit=limit)
            if not ids:
                return []
            rows = session.exec(
                select(SecurityEvent, SignalStream)
                .join(SignalStream, col(SignalStream.stream_id) == col(SecurityEvent.stream_id))
                .where(col(SecurityEvent.id).in_(ids))
                .order_by(col(SecurityEvent.id))
            ).all()
            keys = key_ring(session, settings=self.settings, now=now)
            claimed = [
                _Claimed(
                    id=row.id or 0,
                    jti=row.jti,
                    stream_id=stream.stream_id,
                    client_id=stream.client_id,
                    partner_id=row.partner_id,
                    event_type=row.event_type,
                    attempts=row.attempts,
                    url=stream.endpoint_url or "",
                    authorization=authorization_of(self.settings, stream),
                    token=signed_set(row, settings=self.settings, keys=keys, audience=stream.client_id),
                )
                for row, stream in rows
            ]
            session.commit()
        return claimed

    async def _deliver(self, item: _Claimed) -> Outcome:
        assert self._http is not None
        headers = {"Content-Type": SET_MEDIA_TYPE, "Accept": "application/json"}
        if item.authorization:
            headers["Authorization"] = item.authorization
        try:
            response = await self._http.post(
                item.url, content=item.token, headers=headers, timeout=self.settings.delivery_timeout_seconds
            )
        except httpx.HTTPError as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}", self._backoff(item.attempts))
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(True, str(status), None)
        detail = f"HTTP {status}: {response.text[:300]}"
        if status == 400:
            return Outcome(False, detail, None)
        return Outcome(False, detail, self._backoff(item.attempts, _retry_after(response)))

    def _record(self, results: list[tuple[_Claimed, Outcome]]) -> None:
        now = utcnow()
        with Session(self.engine) as session:
            for item, outcome in results:
                values = outcome.row_values(now=now, failed="rejected")
                session.execute(
                    update(_TABLE)
                    .where(_TABLE.c.id == item.id, _TABLE.c.state == "running")
                    .values(lease_until=None, **values)
                )
                if outcome.retry_in is None:
                    append_audit(
                        session,
                        actor=_SENDER,
                        action="ssf.set_delivered" if outcome.delivered else "ssf.set_rejected",
                        partner_id=item.partner_id,
                        resource_type="SignalStream",
                        resource_id=item.stream_id,
                        detail={
                            "client_id": item.client_id,
                            "jti": item.jti,
                            "event_type": item.event_type,
                            "attempt": item.attempts,
                            "result": outcome.detail[:300],
                        },
                    )
            session.commit()
