"""The login session table: one browser login of one partner person at Entente."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = ["LoginSession"]


class LoginSession(SQLModel, table=True):
    """A person's login; the cookie carries a random secret whose SHA-256 is ``secret_sha256``."""

    __tablename__ = "login_session"
    __table_args__ = (Index("ix_login_session_subject", "partner_id", "subject_id"),)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    """Also the OIDC ``sid`` Entente puts in ID tokens and back-channel logout tokens."""
    secret_sha256: str = Field(unique=True, max_length=64)
    partner_id: str = Field(max_length=36, foreign_key="partner.id", ondelete="CASCADE")
    subject_id: str = Field(max_length=36)
    """The SCIM User id the upstream identity was bound to."""
    upstream_issuer: str = Field(max_length=512)
    upstream_subject: str = Field(max_length=512)
    upstream_session: str | None = Field(default=None, max_length=512)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    ended_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    end_reason: str | None = Field(default=None, max_length=64)
    """``logout`` | ``left`` (the person left the partner) | ``kill_switch`` | ``expired``."""
