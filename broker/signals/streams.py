"""SSF 1.0 §8.1 stream management: create, read, update, replace, delete, status, verification.

Every function takes the receiver (``client_id``) explicitly: a stream is found only through its
own client, so another client's stream answers exactly like a missing one (``StreamNotFound``).
The operator's CLI passes the client it names. Each change is audited and committed here.

Receiver-supplied properties (§8.1.1) are the delivery method and, for push, ``endpoint_url`` and
``authorization_header`` (sealed at rest, never shown again), ``events_requested`` and
``description``; everything else (``stream_id``, ``iss``, ``aud``, ``events_supported``,
``events_delivered``, the poll URL, ``min_verification_interval``) is Entente's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.errors import InvalidValue
from broker.provider.clients import check_uri
from broker.provider.models import OAuthClient
from broker.settings import Settings
from broker.signals.emit import queue_verification
from broker.signals.errors import InvalidRequest, StreamNotFound, TooManyStreams, VerificationTooSoon
from broker.signals.models import SecurityEvent, SignalStream
from broker.signals.set import EVENTS_SUPPORTED
from broker.types import utcnow
from broker.workspaces.sealing import open_sealed, seal

__all__ = [
    "MAX_STREAMS_PER_CLIENT",
    "POLL",
    "PUSH",
    "STATUSES",
    "StreamChanges",
    "add_stream",
    "authorization_of",
    "delete_stream",
    "events_delivered",
    "get_stream",
    "list_streams",
    "pending_counts",
    "request_verification",
    "set_status",
    "update_stream",
]

PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
STATUSES = ("enabled", "paused", "disabled")
MAX_STREAMS_PER_CLIENT = 5
"""More would only multiply every leaver's SETs; a receiver changes a stream rather than adding one."""
MAX_EVENTS_REQUESTED = 32
_SETS = SecurityEvent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StreamChanges:
    """Receiver-supplied properties. In an update (PATCH) ``None`` keeps the current value; in a
    replace (PUT) or a creation it means absent."""

    delivery_method: str | None = None
    endpoint_url: str | None = None
    authorization_header: str | None = None
    events_requested: tuple[str, ...] | None = None
    description: str | None = None


def events_delivered(stream: SignalStream) -> list[str]:
    """SSF §8.1.1: the intersection of what the receiver requested and what Entente supports."""
    return [e for e in EVENTS_SUPPORTED if e in stream.events_requested]


def authorization_of(settings: Settings, stream: SignalStream) -> str | None:
    """The ``Authorization`` header value pushes carry, opened from its seal; ``None`` if none was given."""
    if stream.authorization_sealed is None:
        return None
    return str(open_sealed(settings, stream.authorization_sealed)["authorization_header"])


def _audit(session: Session, *, actor: Actor, action: str, stream: SignalStream, detail: dict[str, object]) -> None:
    append_audit(
        session,
        actor=actor,
        action=action,
        partner_id=None,
        resource_type="SignalStream",
        resource_id=stream.stream_id,
        detail={"client_id": stream.client_id, **detail},
    )


def _summary(stream: SignalStream) -> dict[str, object]:
    return {
        "delivery_method": stream.delivery_method,
        "endpoint_url": stream.endpoint_url,
        "authorization_header": stream.authorization_sealed is not None,
        "events_requested": list(stream.events_requested),
        "description": stream.description,
    }


def _apply(settings: Settings, stream: SignalStream, changes: StreamChanges, *, keep: bool) -> None:
    """Validate ``changes`` and write them on ``stream`` (``keep``: ``None`` keeps the current value)."""
    method = changes.delivery_method or (stream.delivery_method if keep else None)
    if method not in (PUSH, POLL):
        raise InvalidRequest(f"delivery.method must be {PUSH} (push) or {POLL} (poll)")
    switched = method != stream.delivery_method
    stream.delivery_method = method
    if method == POLL:  # the poll URL is Entente's; a receiver echoing it back in a PUT is not an error
        stream.endpoint_url, stream.authorization_sealed = None, None
    else:
        url = changes.endpoint_url or (stream.endpoint_url if keep and not switched else None)
        if not url:
            raise InvalidRequest("delivery.endpoint_url is required for push delivery")
        try:
            stream.endpoint_url = check_uri(url, what="delivery.endpoint_url")
        except InvalidValue as exc:
            raise InvalidRequest(exc.detail) from None
        header = changes.authorization_header
        if header is not None:
            if len(header) > 4096 or "\n" in header or "\r" in header:
                raise InvalidRequest("delivery.authorization_header must be one line of at most 4096 characters")
            stream.authorization_sealed = seal(settings, {"authorization_header": header})
        elif not keep or switched:
            stream.authorization_sealed = None
    if changes.events_requested is not None or not keep:
        chosen = EVENTS_SUPPORTED if changes.events_requested is None else changes.events_requested
        requested = list(dict.fromkeys(chosen))
        if len(requested) > MAX_EVENTS_REQUESTED or any(not e or len(e) > 200 for e in requested):
            raise InvalidRequest(f"events_requested takes at most {MAX_EVENTS_REQUESTED} URIs of 200 characters")
        stream.events_requested = requested
    if changes.description is not None or not keep:
        if changes.description is not None and len(changes.description) > 500:
            raise InvalidRequest("description is longer than 500 characters")
        stream.description = changes.description
    stream.updated_at = utcnow()


def add_stream(
    session: Session, *, settings: Settings, client_id: str, changes: StreamChanges, actor: Actor
) -> SignalStream:
    """Create a stream for ``client_id`` (SSF §8.1.1.1); ``events_requested`` absent means every supported event."""
    client = session.get(OAuthClient, client_id)
    if client is None:
        raise StreamNotFound(f"no OIDC client {client_id!r}")
    if changes.delivery_method == POLL and client.secret_sha256 is None:
        raise InvalidRequest(f"client {client_id!r} is public: it has no secret to authenticate its polls with")
    count = session.exec(select(func.count()).where(SignalStream.client_id == client_id)).one()
    if count >= MAX_STREAMS_PER_CLIENT:
        raise TooManyStreams(f"client {client_id!r} already has {count} streams, the most it may have")
    stream = SignalStream(client_id=client_id, delivery_method="")
    _apply(settings, stream, changes, keep=False)
    session.add(stream)
    session.flush()
    _audit(session, actor=actor, action="ssf_stream.created", stream=stream, detail=_summary(stream))
    session.commit()
    return stream


def get_stream(session: Session, *, client_id: str, stream_id: str) -> SignalStream:
    """The client's stream with this id; another client's is ``StreamNotFound`` like a missing one."""
    stream = session.get(SignalStream, stream_id) if len(stream_id) <= 36 else None
    if stream is None or stream.client_id != client_id:
        raise StreamNotFound(f"no stream {stream_id!r}")
    return stream


def list_streams(session: Session, *, client_id: str | None) -> list[SignalStream]:
    """The client's streams (every stream for ``None``, the operator's view), oldest first."""
    query = select(SignalStream).order_by(col(SignalStream.created_at), col(SignalStream.stream_id))
    if client_id is not None:
        query = query.where(SignalStream.client_id == client_id)
    return list(session.exec(query).all())


def pending_counts(session: Session) -> dict[str, int]:
    """Stream id -> SETs not yet delivered (pending or in flight)."""
    rows = session.exec(
        select(SecurityEvent.stream_id, func.count())
        .where(col(SecurityEvent.state).in_(("pending", "running")))
        .group_by(col(SecurityEvent.stream_id))
    ).all()
    return {stream_id: int(n) for stream_id, n in rows}


def update_stream(
    session: Session,
    *,
    settings: Settings,
    client_id: str,
    stream_id: str,
    changes: StreamChanges,
    replace: bool,
    actor: Actor,
) -> SignalStream:
    """PATCH (§8.1.1.3, absent fields kept) or PUT (§8.1.1.4, absent fields reset); SETs already queued stay."""
    stream = get_stream(session, client_id=client_id, stream_id=stream_id)
    _apply(settings, stream, changes, keep=not replace)
    session.add(stream)
    _audit(
        session,
        actor=actor,
        action="ssf_stream.replaced" if replace else "ssf_stream.updated",
        stream=stream,
        detail=_summary(stream),
    )
    session.commit()
    return stream


def delete_stream(session: Session, *, client_id: str, stream_id: str, actor: Actor) -> int:
    """Delete the stream and the SETs it still held (§8.1.1.5); returns how many SETs went with it."""
    stream = get_stream(session, client_id=client_id, stream_id=stream_id)
    dropped = session.execute(
        delete(_SETS).where(_SETS.c.stream_id == stream_id, _SETS.c.state.in_(("pending", "running")))
    ).rowcount  # type: ignore[attr-defined]
    _audit(session, actor=actor, action="ssf_stream.deleted", stream=stream, detail={"undelivered_sets": dropped})
    session.delete(stream)
    session.commit()
    return int(dropped)


def set_status(
    session: Session, *, client_id: str, stream_id: str, status: str, reason: str | None, actor: Actor
) -> SignalStream:
    """Enable, pause (SETs held, no limit but the database) or disable (nothing queued) a stream (§8.1.2.2)."""
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
    if reason is not None and len(reason) > 500:
        raise InvalidRequest("reason is longer than 500 characters")
    stream = get_stream(session, client_id=client_id, stream_id=stream_id)
    before = stream.status
    stream.status, stream.status_reason, stream.updated_at = status, reason, utcnow()
    session.add(stream)
    _audit(
        session,
        actor=actor,
        action="ssf_stream.status",
        stream=stream,
        detail={"before": before, "status": status, "reason": reason},
    )
    session.commit()
    return stream


def request_verification(
    session: Session,
    *,
    settings: Settings,
    client_id: str,
    stream_id: str,
    state: str | None,
    now: dt.datetime | None = None,
) -> str:
    """Queue a verification SET (§8.1.4.2) unless the last was under ``min_verification_interval`` ago; its jti."""
    now = now or utcnow()
    if state is not None and len(state) > 1000:
        raise InvalidRequest("state is longer than 1000 characters")
    stream = get_stream(session, client_id=client_id, stream_id=stream_id)
    interval = dt.timedelta(seconds=settings.signals_min_verification_interval_seconds)
    last = stream.last_verification_at
    if last is not None and now - last < interval:
        wait = max(1, int((last + interval - now).total_seconds() + 0.999))
        raise VerificationTooSoon(
            f"the last verification was requested {int((now - last).total_seconds())} s ago; "
            f"min_verification_interval is {settings.signals_min_verification_interval_seconds} s",
            retry_after=wait,
        )
    stream.last_verification_at = now
    session.add(stream)
    jti = queue_verification(session, stream=stream, state=state, now=now)
    session.commit()
    return jti
