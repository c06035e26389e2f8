"""The OpenID Provider's tables: clients, authorization codes, token families and tokens, keys, logouts.

Secrets never rest in clear: client secrets, authorization codes and refresh tokens are stored as
SHA-256 digests (each is 256 random bits, so a plain digest is enough), signing keys are sealed
with Fernet (broker.workspaces.sealing). Access tokens are JWTs (RFC 9068); their ``jti`` is stored
so that revocation (RFC 7009) and introspection (RFC 7662) see what happened after issuance.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = [
    "AccessToken",
    "AuthorizationCode",
    "LogoutNotification",
    "OAuthClient",
    "RefreshToken",
    "SigningKey",
    "TokenFamily",
]


class OAuthClient(SQLModel, table=True):
    """A relying party registered with `entente client add`; it belongs to one workspace."""

    __tablename__ = "oauth_client"
    __table_args__ = (Index("ix_oauth_client_workspace", "workspace_id"),)

    client_id: str = Field(primary_key=True, max_length=64)
    workspace_id: str = Field(max_length=36, foreign_key="workspace.id", ondelete="CASCADE")
    """Tokens are issued only to people whose grants include this workspace."""
    secret_sha256: str | None = Field(default=None, max_length=64)
    """SHA-256 of the client secret; ``None`` for a public client (PKCE S256 then required)."""
    redirect_uris: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Compared by exact string match (RFC 9700 §4.1.3)."""
    post_logout_redirect_uris: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    backchannel_logout_uri: str | None = Field(default=None, max_length=2000)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Scopes this client may be given; others it asks for are dropped (RFC 6749 §3.3)."""
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AuthorizationCode(SQLModel, table=True):
    """One authorization code (RFC 6749 §4.1.2): short-lived, single use, bound to client and redirect URI."""

    __tablename__ = "oauth_authorization_code"
    __table_args__ = (Index("ix_oauth_authorization_code_nonce", "client_id", "nonce"),)

    code_sha256: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=64, foreign_key="oauth_client.client_id", ondelete="CASCADE")
    partner_id: str = Field(max_length=36, foreign_key="partner.id", ondelete="CASCADE")
    subject_id: str = Field(max_length=36)
    session_id: str = Field(max_length=36)
    """The LoginSession (``sid``) the person authorized from."""
    redirect_uri: str = Field(max_length=2000)
    scope: str = Field(max_length=1000)
    nonce: str | None = Field(default=None, max_length=512)
    code_challenge: str | None = Field(default=None, max_length=128)
    code_challenge_method: str | None = Field(default=None, max_length=8)
    auth_time: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    used_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    """Set by the one exchange that may use it; a second exchange is a replay (RFC 6749 §4.1.2)."""
    family_id: str | None = Field(default=None, max_length=36)
    """The token family the exchange created, revoked if the code is replayed."""


class TokenFamily(SQLModel, table=True):
    """Everything issued from one code exchange: the client's session at the workspace.

    Refresh tokens rotate inside it; presenting a rotated one revokes the whole family (RFC 9700
    §4.14.2). Ending the person's login session or their leaving revokes it too, and its
    (client, sid) is where back-channel logout tokens go.
    """

    __tablename__ = "oauth_token_family"
    __table_args__ = (
        Index("ix_oauth_token_family_subject", "partner_id", "subject_id"),
        Index("ix_oauth_token_family_session", "session_id"),
    )

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    client_id: str = Field(max_length=64, foreign_key="oauth_client.client_id", ondelete="CASCADE")
    partner_id: str = Field(max_length=36, foreign_key="partner.id", ondelete="CASCADE")
    subject_id: str = Field(max_length=36)
    session_id: str = Field(max_length=36)
    """The LoginSession id, which is the ``sid`` in ID and logout tokens."""
    scope: str = Field(max_length=1000)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    revoke_reason: str | None = Field(default=None, max_length=64)
    """``refresh_reuse`` | ``code_reuse`` | ``revoked`` (RFC 7009) | ``logout`` | ``left`` | …"""


class RefreshToken(SQLModel, table=True):
    """One refresh token of a family; used once, then replaced (rotation)."""

    __tablename__ = "oauth_refresh_token"
    __table_args__ = (Index("ix_oauth_refresh_token_family", "family_id"),)

    token_sha256: str = Field(primary_key=True, max_length=64)
    family_id: str = Field(max_length=36, foreign_key="oauth_token_family.id", ondelete="CASCADE")
    issued_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    rotated_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    """When it was exchanged for its successor; presenting it again is reuse."""


class AccessToken(SQLModel, table=True):
    """An issued JWT access token, by ``jti``: what introspection and revocation look up."""

    __tablename__ = "oauth_access_token"
    __table_args__ = (Index("ix_oauth_access_token_family", "family_id"),)

    jti: str = Field(primary_key=True, max_length=64)
    family_id: str = Field(max_length=36, foreign_key="oauth_token_family.id", ondelete="CASCADE")
    issued_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class SigningKey(SQLModel, table=True):
    """A JWS signing key (RS256): published from ``created_at``, signing from ``active_from``."""

    __tablename__ = "oidc_signing_key"

    kid: str = Field(primary_key=True, max_length=64)
    alg: str = Field(max_length=16)
    public_jwk: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    private_sealed: str
    """The private JWK, Fernet-sealed."""
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    active_from: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class LogoutNotification(SQLModel, table=True):
    """A back-channel logout token to deliver to one client for one session (OIDC Back-Channel Logout 1.0 §2.5).

    Written in the transaction that ends the session, delivered by ``LogoutSender`` with retries,
    kept afterwards as the receipt (``delivered_at``) from which time-to-logout is read.
    """

    __tablename__ = "oidc_logout_notification"
    __table_args__ = (Index("ix_oidc_logout_notification_due", "state", "not_before"), {"sqlite_autoincrement": True})

    id: int | None = Field(default=None, primary_key=True)
    jti: str = Field(unique=True, max_length=64)
    """The logout token's ``jti``: the same on every attempt, so the RP can drop a repeat."""
    client_id: str = Field(max_length=64, foreign_key="oauth_client.client_id", ondelete="CASCADE")
    partner_id: str = Field(max_length=36)
    subject_id: str = Field(max_length=36)
    sid: str = Field(max_length=36)
    reason: str = Field(max_length=64)
    state: str = Field(default="pending", max_length=16)
    """``pending`` | ``running`` (leased) | ``delivered`` | ``dead`` (refused, or attempts ran out)."""
    attempts: int = Field(default=0)
    not_before: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    lease_until: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    queued_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    delivered_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, max_length=1000)
