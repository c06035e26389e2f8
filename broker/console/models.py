"""The console's own table: local administrators who sign in with a password (the bootstrap operator)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = ["ConsoleAdmin"]


class ConsoleAdmin(SQLModel, table=True):
    """A local console administrator; partner people sign in through Entente's OIDC provider instead."""

    __tablename__ = "console_admin"

    username: str = Field(primary_key=True, max_length=64)
    password_hash: str = Field(max_length=255)
    """``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>`` (hashlib.scrypt, RFC 7914): never the password."""
    role: str = Field(max_length=16)
    """``operator`` (sees everything) or ``partner_admin`` (sees ``partner_id``'s people only)."""
    partner_id: str | None = Field(default=None, max_length=36, foreign_key="partner.id", ondelete="CASCADE")
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    last_login_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
