"""The Shared Signals tables: receivers' streams (SSF 1.0 §8) and every SET queued for them.

A SET is written once, in the transaction that caused it, and stays until it is delivered: a push
stream's row is ``delivered`` on the receiver's 202 (RFC 8935 §2.2), a poll stream's when the
receiver acknowledges its ``jti`` (RFC 8936 §2.4). The row holds what the token says, not the
token: it is signed at each delivery with the current provider key, so a SET held for days behind
a receiver outage still verifies against the published JWKS when it finally goes out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = ["SecurityEvent", "SignalStream"]


class SignalStream(SQLModel, table=True):
    """One event stream of one OIDC client (the receiver), created through the SSF API or the CLI."""

    __tablename__ = "ssf_stream"
    __table_args__ = (Index("ix_ssf_stream_client", "client_id"),)

    stream_id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    client_id: str = Field(max_length=64, foreign_key="oauth_client.client_id", ondelete="CASCADE")
    """The receiver: the only caller that may see or change the stream, and every SET's ``aud``."""
    delivery_method: str = Field(max_length=32)
    """``urn:ietf:rfc:8935`` (push) or ``urn:ietf:rfc:8936`` (poll)."""
    endpoint_url: str | None = Field(default=None, max_length=2000)
    """Where pushed SETs are POSTed; ``None`` for poll (the poll URL is Entente's own)."""
    authorization_sealed: str | None = None
    """The receiver's ``authorization_header`` for pushes, Fernet-sealed; ``None`` when it gave none."""
    events_requested: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str | None = Field(default=None, max_length=500)
    status: str = Field(default="enabled", max_length=16)
    """``enabled`` | ``paused`` (SETs are held) | ``disabled`` (no SETs are queued) (SSF §8.1.2)."""
    status_reason: str | None = Field(default=None, max_length=500)
    last_verification_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class SecurityEvent(SQLModel, table=True):
    """One SET for one stream, from queueing to delivery (the row is its receipt afterwards)."""

    __tablename__ = "ssf_event"
    __table_args__ = (
        Index("ix_ssf_event_due", "state", "not_before"),
        Index("ix_ssf_event_stream", "stream_id", "state"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    jti: str = Field(unique=True, max_length=64)
    """The SET's ``jti``: the same on every attempt, so a receiver drops repeats (RFC 8935 §2.3)."""
    txn: str = Field(max_length=64)
    """Shared by every SET one cause produced (RFC 8417 §2.2): one leaver, one ``txn``."""
    stream_id: str = Field(max_length=36, foreign_key="ssf_stream.stream_id", ondelete="CASCADE")
    event_type: str = Field(max_length=200)
    event: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The event's own claims (the value under ``events``)."""
    subject_format: str = Field(max_length=16)
    """RFC 9493 format of ``sub_id``: ``iss_sub`` (a person, as in their ID tokens) or ``opaque`` (the stream)."""
    subject: str = Field(max_length=255)
    partner_id: str | None = Field(default=None, max_length=36)
    """The person's partner (``None`` for a stream verification event)."""
    state: str = Field(default="pending", max_length=16)
    """``pending`` | ``running`` (leased by a push sender) | ``delivered`` | ``rejected`` (the receiver refused it)."""
    attempts: int = Field(default=0)
    not_before: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    lease_until: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    queued_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    """Also the SET's ``iat``: when the event was issued, whenever it is delivered."""
    delivered_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, max_length=1000)
