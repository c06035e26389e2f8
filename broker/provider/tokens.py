"""Issuing, finding and revoking tokens.

- **Access tokens** are JWTs (RFC 9068: header ``typ: at+jwt``; claims ``iss``, ``sub``, ``aud``,
  ``client_id``, ``iat``, ``exp``, ``jti``, ``scope``, plus ``sid`` and ``auth_time``), signed with
  the provider's RS256 key and short-lived (``oidc_access_token_seconds``, 5 minutes). A workspace
  may verify them offline; Entente records each ``jti``, so its introspection (RFC 7662) and
  UserInfo report a revoked token inactive at once.
- **Refresh tokens** are opaque (``ent_rt_`` + 256 random bits), stored as SHA-256, and rotate on
  every use inside their family (RFC 6749 §6, RFC 9700 §4.14.2). A rotated token presented again
  revokes the whole family.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import bindparam, insert, update
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from broker.provider.claims import Principal, admit, with_admission
from broker.provider.clients import RegisteredClient, sha256_hex
from broker.provider.keys import ALGORITHM, KeyRing
from broker.provider.models import AccessToken, OAuthClient, RefreshToken, TokenFamily
from broker.sessions.models import LoginSession
from broker.settings import Settings

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "Issued",
    "OpenedFamily",
    "TokenRecord",
    "find_refresh_token",
    "find_and_claim_refresh_token",
    "issue_access_token",
    "new_family_id",
    "new_refresh_token",
    "open_family",
    "record_tokens",
    "revoke_access_token",
    "revoke_families",
    "token_record",
    "verify_access_token",
]

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JOSE typ (RFC 9068 §2.1), not a secret
REFRESH_PREFIX = "ent_rt_"
_FAMILIES = TokenFamily.__table__  # type: ignore[attr-defined]
_ACCESS = AccessToken.__table__  # type: ignore[attr-defined]
_REFRESH = RefreshToken.__table__  # type: ignore[attr-defined]
_LOGINS = LoginSession.__table__  # type: ignore[attr-defined]

# Prebuilt Core statements for the token endpoint's hot paths (no ORM identity map or unit of work).
_INSERT_ACCESS = insert(_ACCESS).values(
    jti=bindparam("jti"),
    family_id=bindparam("family_id"),
    issued_at=bindparam("issued_at"),
    expires_at=bindparam("access_expires_at"),
)
_INSERT_FAMILY = insert(_FAMILIES)
_INSERT_REFRESH = insert(_REFRESH).values(
    token_sha256=bindparam("token_sha256"),
    family_id=bindparam("family_id"),
    issued_at=bindparam("issued_at"),
    expires_at=bindparam("refresh_expires_at"),
)
_INSERT_BOTH = _INSERT_REFRESH.add_cte(_INSERT_ACCESS.cte("issued_access"))
"""PostgreSQL: both tokens of a grant in one statement (a data-modifying WITH); SQLite has none."""
_FIND_REFRESH = with_admission(
    core_select(
        _REFRESH.c.token_sha256,
        _REFRESH.c.expires_at,
        _REFRESH.c.rotated_at,
        _FAMILIES.c.id.label("family_id"),
        _FAMILIES.c.client_id,
        _FAMILIES.c.partner_id,
        _FAMILIES.c.subject_id,
        _FAMILIES.c.session_id,
        _FAMILIES.c.scope,
        _FAMILIES.c.created_at.label("family_created_at"),
        _FAMILIES.c.expires_at.label("family_expires_at"),
        _FAMILIES.c.revoked_at.label("family_revoked_at"),
        _LOGINS.c.created_at.label("login_created_at"),
    )
    .select_from(
        _REFRESH.join(_FAMILIES, _FAMILIES.c.id == _REFRESH.c.family_id).outerjoin(
            _LOGINS, _LOGINS.c.id == _FAMILIES.c.session_id
        )
    )
    .where(_REFRESH.c.token_sha256 == bindparam("digest")),
    partner_id=_FAMILIES.c.partner_id,
    subject_id=_FAMILIES.c.subject_id,
)
"""The refresh token, its family, its login session's start (the ``auth_time``; ``None`` once pruned),
and whether its person is still admitted to the workspace ``:workspace_id`` (``broker.provider.claims``)."""
_CLAIM_REFRESH = (
    update(_REFRESH)
    .where(
        _REFRESH.c.token_sha256 == bindparam("digest"),
        _REFRESH.c.rotated_at.is_(None),
        _REFRESH.c.family_id.in_(
            core_select(_FAMILIES.c.id).where(
                _FAMILIES.c.client_id == bindparam("client_id"), _FAMILIES.c.revoked_at.is_(None)
            )
        ),
    )
    .values(rotated_at=bindparam("now"))
)
"""Marks a token rotated, if it was not yet and its family is live and of ``:client_id``."""
_FIND_AND_CLAIM = _FIND_REFRESH.add_columns(
    core_select(_CLAIM_REFRESH.returning(_REFRESH.c.token_sha256).cte("claimed").c.token_sha256)
    .exists()
    .label("claimed")
)
"""PostgreSQL: ``_FIND_REFRESH`` and, in the same statement, ``_CLAIM_REFRESH``; the row shows the token
as it was before (``rotated_at``) and whether this statement ``claimed`` it."""


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


@dataclass(frozen=True)
class Issued:
    """What the token generator made, for ``save_token`` to record (the response body holds no ids)."""

    jti: str
    access_expires_at: dt.datetime
    refresh_token: str | None
    refresh_expires_at: dt.datetime | None


def issue_access_token(
    keys: KeyRing, *, issuer: str, client_id: str, principal: Principal, scope: str, now: dt.datetime, seconds: int
) -> tuple[str, str, dt.datetime]:
    """An RFC 9068 access token: (token, jti, expiry)."""
    jti = secrets.token_urlsafe(18)
    expires_at = now + dt.timedelta(seconds=seconds)
    claims = {
        "iss": issuer,
        "sub": principal.subject_id,
        "aud": client_id,
        "client_id": client_id,
        "iat": _epoch(now),
        "exp": _epoch(expires_at),
        "jti": jti,
        "scope": scope,
        "sid": principal.session_id,
        "auth_time": _epoch(principal.auth_time),
    }
    token = jwt.encode(keys.header(ACCESS_TOKEN_TYPE), claims, keys.signing, algorithms=[ALGORITHM])
    return token, jti, expires_at


def new_refresh_token() -> str:
    return f"{REFRESH_PREFIX}{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class OpenedFamily:
    """The family a code exchange opened: what ``record_tokens`` needs of it."""

    id: str
    expires_at: dt.datetime


def new_family_id() -> str:
    """A token family id (``TokenFamily.id``): chosen when the code is claimed, so the claim records it."""
    return str(uuid.uuid4())


def open_family(
    session: Session,
    *,
    client: RegisteredClient,
    principal: Principal,
    scope: str,
    now: dt.datetime,
    settings: Settings,
    family_id: str | None = None,
) -> OpenedFamily:
    """A new family for one code exchange, in the caller's transaction (a Core INSERT, run at once)."""
    family = OpenedFamily(
        id=family_id or new_family_id(), expires_at=now + dt.timedelta(days=settings.oidc_grant_max_days)
    )
    session.connection().execute(
        _INSERT_FAMILY,
        {
            "id": family.id,
            "client_id": client.client_id,
            "partner_id": principal.partner_id,
            "subject_id": principal.subject_id,
            "session_id": principal.session_id,
            "scope": scope,
            "created_at": now,
            "expires_at": family.expires_at,
            "revoked_at": None,
            "revoke_reason": None,
        },
    )
    return family


def record_tokens(
    session: Session, *, family_id: str, family_expires_at: dt.datetime, issued: Issued, now: dt.datetime
) -> None:
    """Store the access token's jti and the refresh token's digest (never the token itself).

    Core inserts in the session's transaction: the family row must already be flushed. On
    PostgreSQL both rows go in one statement (one round trip fewer per refresh grant).
    """
    connection = session.connection()
    access = {
        "jti": issued.jti,
        "family_id": family_id,
        "issued_at": now,
        "access_expires_at": issued.access_expires_at,
    }
    if issued.refresh_token is None or issued.refresh_expires_at is None:
        connection.execute(_INSERT_ACCESS, access)
        return
    both = {
        **access,
        "token_sha256": sha256_hex(issued.refresh_token),
        "refresh_expires_at": min(issued.refresh_expires_at, family_expires_at),
    }
    if connection.dialect.name == "postgresql":
        connection.execute(_INSERT_BOTH, both)
    else:
        connection.execute(_INSERT_ACCESS, access)
        connection.execute(_INSERT_REFRESH, both)


def find_and_claim_refresh_token(
    session: Session, *, token: str, client_id: str, workspace_id: str, now: dt.datetime
) -> tuple[Any, bool]:
    """The refresh grant's lookup and claim: (row, claimed), row ``None`` for a string Entente never issued.

    The row holds the token as it was before this call, its family's columns and the person's
    admission to ``workspace_id`` (``claims.admitted`` reads those). ``claimed`` is whether this call
    marked it rotated: only a token not rotated before, of a live family of ``client_id``; a
    concurrent request that claimed it first leaves it ``False`` (a reuse). One statement on
    PostgreSQL, two on SQLite.
    """
    if not token.startswith(REFRESH_PREFIX) or len(token) > 128:
        return None, False
    connection = session.connection()
    key = {"digest": sha256_hex(token), "workspace_id": workspace_id}
    if connection.dialect.name == "postgresql":
        row = connection.execute(_FIND_AND_CLAIM, {**key, "client_id": client_id, "now": now}).first()
        return row, bool(row is not None and row.claimed)
    row = connection.execute(_FIND_REFRESH, key).first()
    if row is None:
        return None, False
    claimed = connection.execute(_CLAIM_REFRESH, {"digest": key["digest"], "client_id": client_id, "now": now})
    return row, claimed.rowcount == 1


def find_refresh_token(session: Session, *, token: str) -> tuple[RefreshToken, TokenFamily] | None:
    """The refresh token row and its family, or ``None`` for a string Entente never issued."""
    if not token.startswith(REFRESH_PREFIX) or len(token) > 128:
        return None
    found = session.exec(
        select(RefreshToken, TokenFamily)
        .join(TokenFamily, col(TokenFamily.id) == col(RefreshToken.family_id))
        .where(RefreshToken.token_sha256 == sha256_hex(token))
    ).first()
    return (found[0], found[1]) if found else None


def revoke_families(session: Session, *, family_ids: Iterable[str], reason: str, now: dt.datetime) -> int:
    """Revoke these families and every access token in them; returns how many families were live."""
    ids = sorted(set(family_ids))
    if not ids:
        return 0
    result = session.execute(
        update(_FAMILIES)
        .where(_FAMILIES.c.id.in_(ids), _FAMILIES.c.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason)
    )
    session.execute(
        update(_ACCESS).where(_ACCESS.c.family_id.in_(ids), _ACCESS.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def revoke_access_token(session: Session, *, jti: str, now: dt.datetime) -> None:
    session.execute(update(_ACCESS).where(_ACCESS.c.jti == jti, _ACCESS.c.revoked_at.is_(None)).values(revoked_at=now))


def verify_access_token(keys: KeyRing, *, token: str, issuer: str) -> dict[str, Any] | None:
    """The claims of an access token Entente signed (signature, ``typ``, ``iss``), else ``None``.

    Expiry and revocation are the caller's business (``token_record``).
    """
    if token.count(".") != 2 or len(token) > 8192:
        return None
    try:
        decoded = jwt.decode(token, keys.verifier(), algorithms=[ALGORITHM])
    except (JoseError, ValueError):
        return None
    if decoded.header.get("typ") != ACCESS_TOKEN_TYPE or decoded.claims.get("iss") != issuer:
        return None
    return dict(decoded.claims)


@dataclass(frozen=True)
class TokenRecord:
    """A token as revocation (RFC 7009) and introspection (RFC 7662) see it."""

    kind: Literal["access_token", "refresh_token"]
    key: str
    """The ``jti`` of an access token, the digest of a refresh token."""
    family_id: str
    client_id: str
    workspace_id: str
    partner_id: str
    subject_id: str
    session_id: str
    user_name: str | None
    """The person's userName when admission was checked and passed, else ``None``."""
    scope: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    revoked: bool
    """Revoked, rotated (refresh), its family revoked, or its person no longer admitted."""
    now: dt.datetime

    def check_client(self, client: RegisteredClient) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return self.expires_at <= self.now

    def is_revoked(self) -> bool:
        return self.revoked


def _admitted(session: Session, family: TokenFamily, workspace_id: str, now: dt.datetime) -> str | None:
    principal = admit(
        session,
        partner_id=family.partner_id,
        subject_id=family.subject_id,
        workspace_id=workspace_id,
        session_id=family.session_id,
        auth_time=family.created_at,
        now=now,
    )
    return principal.person.facts.user_name if principal and principal.person else None


def token_record(
    session: Session,
    keys: KeyRing,
    *,
    token: str,
    hint: str | None,
    issuer: str,
    now: dt.datetime,
    admission: bool = True,
) -> TokenRecord | None:
    """The record of an access or refresh token Entente issued, else ``None``; ``hint`` only orders the search.

    With ``admission`` (introspection, UserInfo) a live token also counts as revoked when its person
    is no longer admitted to the client's workspace; revocation skips that check.
    """
    kinds = ["refresh_token", "access_token"] if hint == "refresh_token" else ["access_token", "refresh_token"]
    for kind in kinds:
        if kind == "refresh_token":
            found = find_refresh_token(session, token=token)
            if found is None:
                continue
            refresh, family = found
            key, issued_at, expires_at = refresh.token_sha256, refresh.issued_at, refresh.expires_at
            revoked = refresh.rotated_at is not None
        else:
            claims = verify_access_token(keys, token=token, issuer=issuer)
            row = session.get(AccessToken, str(claims.get("jti"))) if claims else None
            owner = session.get(TokenFamily, row.family_id) if row else None
            if row is None or owner is None:
                continue
            family = owner
            key, issued_at, expires_at, revoked = row.jti, row.issued_at, row.expires_at, row.revoked_at is not None
        client = session.get(OAuthClient, family.client_id)
        if client is None:
            return None
        revoked = revoked or family.revoked_at is not None or family.expires_at <= now
        user_name = None
        if not revoked and admission:
            user_name = _admitted(session, family, client.workspace_id, now)
            revoked = user_name is None
        return TokenRecord(
            kind=kind,  # type: ignore[arg-type]
            key=key,
            family_id=family.id,
            client_id=family.client_id,
            workspace_id=client.workspace_id,
            partner_id=family.partner_id,
            subject_id=family.subject_id,
            session_id=family.session_id,
            user_name=user_name,
            scope=family.scope,
            issued_at=issued_at,
            expires_at=expires_at,
            revoked=revoked,
            now=now,
        )
    return None
