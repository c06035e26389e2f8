"""Tables of partners, their verified email domains and their SCIM bearer tokens."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = ["DomainPolicy", "Partner", "PartnerDomain", "PartnerStatus", "ScimToken"]


class PartnerStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class DomainPolicy(StrEnum):
    """What happens to a user whose email or userName lies outside the partner's verified domains."""

    ENFORCE = "enforce"  #: refuse with 400 invalidValue
    WARN = "warn"  #: accept, and record a warning in the audit log


class Partner(SQLModel, table=True):
    """A partner company: one tenant, strictly isolated from every other."""

    __tablename__ = "partner"

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    slug: str = Field(unique=True, max_length=64)
    name: str = Field(max_length=200)
    status: str = Field(default=PartnerStatus.ACTIVE, max_length=16)
    domain_policy: str = Field(default=DomainPolicy.ENFORCE, max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class PartnerDomain(SQLModel, table=True):
    """An email domain a partner has verified; a domain belongs to at most one partner."""

    __tablename__ = "partner_domain"

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(foreign_key="partner.id", index=True, max_length=36, ondelete="CASCADE")
    domain: str = Field(unique=True, max_length=253)
    """Lower-case, IDNA (punycode) form."""


class ScimToken(SQLModel, table=True):
    """A SCIM bearer credential. Only a SHA-256 of its secret is kept; the secret is shown once."""

    __tablename__ = "scim_token"

    id: str = Field(primary_key=True, max_length=16)
    """Public lookup id, embedded in the token text; carries no secret."""
    partner_id: str = Field(foreign_key="partner.id", index=True, max_length=36, ondelete="CASCADE")
    secret_sha256: str = Field(max_length=64)
    label: str | None = Field(default=None, max_length=200)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_used_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
