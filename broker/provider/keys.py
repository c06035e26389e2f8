"""Signing keys of the OpenID Provider: RFC 7517 JWKs, RS256 (RFC 7518 §3.3), rotation by age.

A key's life (OIDC Core §10.1.1, "rotation of asymmetric signing keys"):

    created_at ── published in the JWKS, signs nothing yet (relying parties fetch it meanwhile)
    active_from ── signs every new token, until a newer key's active_from
    + retention ── still published while tokens it signed can be alive, then pruned

The private key is Fernet-sealed in the database (broker.workspaces.sealing); each process opens a
key once and keeps it by ``kid`` (a kid never changes its key). Keys are made lazily: the first
request that needs one makes it, and a request that finds the signing key older than
``oidc_key_rotation_days`` adds its successor, active after ``oidc_key_publish_seconds``. Both are
written in the caller's transaction, so they exist only if the request that made them committed.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import delete
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from broker.provider.models import SigningKey
from broker.settings import Settings
from broker.types import utcnow
from broker.workspaces.sealing import open_sealed, seal

__all__ = ["ALGORITHM", "KeyRing", "key_ring", "retention", "rotate_signing_key"]

ALGORITHM = "RS256"
"""The one signing algorithm (``id_token_signing_alg_values_supported``); RSA 2048 as the CAEP interop profile asks."""
RSA_BITS = 2048
LOGOUT_TOKEN_SECONDS = 120
"""Lifetime of a back-channel logout token (signed at each delivery attempt)."""
SKEW = dt.timedelta(seconds=60)
_opened: dict[str, RSAKey] = {}
"""Private keys already opened in this process, by kid."""


@dataclass(frozen=True)
class KeyRing:
    """The keys as one request sees them: the one that signs, and every one a verifier may need."""

    signing: RSAKey
    published: tuple[dict[str, Any], ...]
    """Public JWKs (RFC 7517 §4), newest first: the ``keys`` of the JWKS document."""

    @property
    def kid(self) -> str:
        return str(self.signing.kid)

    def header(self, typ: str) -> dict[str, str]:
        """A JWS protected header for a token of this ``typ`` (``JWT``, ``at+jwt``, ``logout+jwt``)."""
        return {"alg": ALGORITHM, "kid": self.kid, "typ": typ}

    def verifier(self) -> KeySet:
        """The published public keys, for verifying what Entente signed."""
        return KeySet.import_key_set({"keys": list(self.published)})

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": list(self.published)}


def retention(settings: Settings) -> dt.timedelta:
    """How long a superseded key stays published: the longest life of anything it signed, plus skew."""
    longest = max(settings.oidc_access_token_seconds, settings.oidc_id_token_seconds, LOGOUT_TOKEN_SECONDS)
    return dt.timedelta(seconds=longest) + SKEW


def _new_key(session: Session, settings: Settings, *, now: dt.datetime, active_from: dt.datetime) -> SigningKey:
    kid = secrets.token_urlsafe(12)
    key = RSAKey.generate_key(RSA_BITS, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM}, private=True)
    row = SigningKey(
        kid=kid,
        alg=ALGORITHM,
        public_jwk=key.as_dict(private=False),
        private_sealed=seal(settings, key.as_dict(private=True)),
        created_at=now,
        active_from=active_from,
    )
    session.add(row)
    session.flush()
    _opened[kid] = key
    return row


def rotate_signing_key(
    session: Session, *, settings: Settings, now: dt.datetime | None = None, immediate: bool = False
) -> SigningKey:
    """Add the successor key: published now, signing after ``oidc_key_publish_seconds`` (or at once).

    ``immediate`` is for a compromised key: tokens signed by the old key still verify until they
    expire, but nothing new is signed with it. The caller commits.
    """
    now = now or utcnow()
    lead = dt.timedelta(seconds=0 if immediate else settings.oidc_key_publish_seconds)
    latest = session.exec(select(SigningKey.active_from).order_by(col(SigningKey.active_from).desc())).first()
    active_from = now + lead
    if latest is not None and latest >= active_from:  # the newest key must be the successor, even on a tie
        active_from = latest + dt.timedelta(microseconds=1)
    return _new_key(session, settings, now=now, active_from=active_from)


_KEYS = SigningKey.__table__  # type: ignore[attr-defined]
_ALL_KEYS = sql_select(_KEYS.c.kid, _KEYS.c.active_from, _KEYS.c.public_jwk, _KEYS.c.private_sealed).order_by(
    _KEYS.c.active_from, _KEYS.c.kid
)


def _open(settings: Settings, row: Any) -> RSAKey:
    key = _opened.get(row.kid)
    if key is None:
        key = RSAKey.import_key(open_sealed(settings, row.private_sealed))
        _opened[row.kid] = key
    return key


def key_ring(session: Session, *, settings: Settings, now: dt.datetime | None = None) -> KeyRing:
    """The current keys; makes the first key, or the successor of one past its rotation age, if needed."""
    now = now or utcnow()
    rows: list[Any] = list(session.connection().execute(_ALL_KEYS).all())  # Core rows: every request asks
    active = [r for r in rows if r.active_from <= now]
    if not active:
        rows.append(_new_key(session, settings, now=now, active_from=now))
        active = rows[-1:]
    signing = active[-1]
    pending = [r for r in rows if r.active_from > now]
    if not pending and signing.active_from <= now - dt.timedelta(days=settings.oidc_key_rotation_days):
        rows.append(rotate_signing_key(session, settings=settings, now=now))
    keep = retention(settings)
    published: list[Any] = []
    expired: list[str] = []
    for index, row in enumerate(rows):
        successor = next((r for r in rows[index + 1 :] if r.active_from > row.active_from), None)
        if successor is not None and successor.active_from < now - keep:
            expired.append(row.kid)
        else:
            published.append(row)
    if expired:
        session.execute(delete(SigningKey).where(col(SigningKey.kid).in_(expired)))
    published.sort(key=lambda r: (r.active_from, r.kid), reverse=True)
    return KeyRing(signing=_open(settings, signing), published=tuple(r.public_jwk for r in published))
