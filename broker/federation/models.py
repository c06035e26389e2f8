"""The IdP connection table: one upstream identity provider a partner's people log in with."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = ["BindingKey", "IdPConnection", "IdPProtocol"]


class IdPProtocol(StrEnum):
    OIDC = "oidc"
    SAML = "saml"


class BindingKey(StrEnum):
    """Which attribute of the partner's SCIM person an upstream identity is bound to."""

    EXTERNAL_ID = "externalId"
    """``externalId`` equals the upstream ``sub`` / persistent NameID (exact, case-sensitive)."""
    USER_NAME = "userName"
    """``userName`` equals the connection's ``username_claim`` (case-insensitive, as SCIM compares userName)."""
    EMAIL = "email"
    """One of the person's ``emails`` equals the upstream email, only when the IdP says it is verified and
    its domain is one the partner verified."""


class IdPConnection(SQLModel, table=True):
    """A partner's OIDC or SAML 2.0 IdP. Secrets are sealed at rest (broker.workspaces.sealing).

    The id is ``<partner slug>.<name>``: readable and known before the row exists, because the
    redirect URI the partner registers at its IdP contains it (``/login/callback/<id>``).
    """

    __tablename__ = "idp_connection"
    __table_args__ = (
        UniqueConstraint("partner_id", "name", name="uq_idp_connection_partner_name"),
        Index("ix_idp_connection_partner", "partner_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=130)
    partner_id: str = Field(foreign_key="partner.id", max_length=36, ondelete="CASCADE")
    protocol: str = Field(max_length=8)
    """An ``IdPProtocol`` value."""
    name: str = Field(max_length=64)
    """Lower-case letters, digits and inner hyphens, unique within the partner (e.g. ``okta``)."""
    issuer: str | None = Field(default=None, max_length=512)
    """OIDC issuer identifier (exactly as the IdP's discovery document states it), or the SAML entityID."""
    saml_metadata: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """SAML metadata XML or its URL; unused by OIDC connections."""
    client_id: str | None = Field(default=None, max_length=512)
    client_secret_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """``{"client_secret": …}`` sealed with Fernet; never stored or logged in clear."""
    binding_key: str = Field(default=BindingKey.EXTERNAL_ID.value, max_length=16)
    """A ``BindingKey`` value."""
    username_claim: str = Field(default="preferred_username", max_length=64)
    """The upstream claim compared with ``userName`` when ``binding_key`` is ``userName``."""
    jit: bool = Field(default=False)
    """Create a person at first login when none binds (only when the partner allows it)."""
    saml_email_verified: bool = Field(default=False)
    """SAML only: the operator vouches that this IdP asserts only addresses it verified (SAML has no
    ``email_verified``), so its email addresses may bind people (``--bind email``) and create them (JIT)."""
    version: int = Field(default=1)
    """Configuration version: adapters are cached by ``(id, version)``; every change bumps it."""
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
