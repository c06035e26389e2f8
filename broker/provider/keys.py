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

The token, authorization and UserInfo paths ask ``key_ring(..., cached=True)``: the key rows are
reused for ``RING_CACHE_SECONDS`` per process and engine, and the ring (which key signs, which are
published) is still worked out from them against the request's clock. Any rotation, new key or
pruning in this process forgets them at once; whenever the cached rows call for a write (no active
key, a key past its rotation age without successor, an expired key to prune) they are read again
and the uncached path decides. So a key rotated by another process (``entente oidc rotate-key``)
signs there within ``RING_CACHE_SECONDS``; the JWKS endpoint always reads the table.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import delete, event
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from broker.provider.models import SigningKey
from broker.settings import Settings
from broker.types import utcnow
from broker.workspaces.sealing import open_sealed, seal

__all__ = [
    "ALGORITHM",
    "RING_CACHE_SECONDS",
    "KeyRing",
    "forget_key_rows",
    "key_ring",
    "retention",
    "rotate_signing_key",
]

ALGORITHM = "RS256"
"""The one signing algorithm (``id_token_signing_alg_values_supported``); RSA 2048 as the CAEP interop profile asks."""
RSA_BITS = 2048
LOGOUT_TOKEN_SECONDS = 120
"""Lifetime of a back-channel logout token (signed at each delivery attempt)."""
SKEW = dt.timedelta(seconds=60)
_opened: dict[str, RSAKey] = {}
"""Private keys already opened in this process, by kid."""
RING_CACHE_SECONDS = 5.0
"""How long ``key_ring(cached=True)`` reuses the key rows it read (per process and engine)."""
_rows: weakref.WeakKeyDictionary[Any, tuple[float, tuple[Any, ...]]] = weakref.WeakKeyDictionary()
_rows_lock = threading.Lock()
_generation = 0
"""Bumped by every ``forget_key_rows``: rows read across a bump are not kept."""
_verifiers: dict[tuple[str, ...], KeySet] = {}
"""Public key sets already imported, by their kids (a kid never changes its key)."""


def forget_key_rows() -> None:
    """Drop every cached key row: the next ``key_ring(cached=True)`` reads the table."""
    global _generation
    with _rows_lock:
        _rows.clear()
        _generation += 1


def _forget_on_commit(session: Session) -> None:
    """Forget again when the transaction that wrote a key commits (a concurrent reader may have cached
    the rows without it in between)."""
    event.listen(session, "after_commit", lambda _session: forget_key_rows(), once=True)


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
        """The published public keys, for verifying what Entente signed (imported once per set of kids)."""
        kids = tuple(str(key.get("kid")) for key in self.published)
        found = _verifiers.get(kids)
        if found is None:
            found = KeySet.import_key_set({"keys": list(self.published)})
            if len(_verifiers) >= 16:
                _verifiers.clear()
            _verifiers[kids] = found
        return found

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
    forget_key_rows()
    _forget_on_commit(session)
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


def _cached_ring(settings: Settings, rows: tuple[Any, ...], now: dt.datetime) -> KeyRing | None:
    """The ring these rows give at ``now``, or ``None`` when a key must be made, added or pruned first."""
    signing = None
    for row in rows:  # ordered by active_from
        if row.active_from <= now:
            signing = row
    if signing is None:
        return None
    pending = any(r.active_from > now for r in rows)
    if not pending and signing.active_from <= now - dt.timedelta(days=settings.oidc_key_rotation_days):
        return None
    keep = retention(settings)
    for index, row in enumerate(rows):
        successor = next((r for r in rows[index + 1 :] if r.active_from > row.active_from), None)
        if successor is not None and successor.active_from < now - keep:
            return None
    published = sorted(rows, key=lambda r: (r.active_from, r.kid), reverse=True)
    return KeyRing(signing=_open(settings, signing), published=tuple(r.public_jwk for r in published))


def key_ring(session: Session, *, settings: Settings, now: dt.datetime | None = None, cached: bool = False) -> KeyRing:
    """The current keys; makes the first key, or the successor of one past its rotation age, if needed.

    ``cached``: reuse this process's key rows for up to ``RING_CACHE_SECONDS`` (see the module
    docstring); they are never used when a key would have to be written.
    """
    now = now or utcnow()
    bind = session.get_bind() if cached else None
    if bind is not None:
        with _rows_lock:
            hit = _rows.get(bind)
        if hit is not None and time.monotonic() - hit[0] < RING_CACHE_SECONDS:
            ring = _cached_ring(settings, hit[1], now)
            if ring is not None:
                return ring
    read_at, generation = time.monotonic(), _generation
    rows: list[Any] = list(session.connection().execute(_ALL_KEYS).all())  # Core rows: every request asks
    if bind is not None:
        ring = _cached_ring(settings, tuple(rows), now)
        if ring is not None:
            with _rows_lock:
                if generation == _generation:
                    _rows[bind] = (read_at, tuple(rows))
            return ring
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
        forget_key_rows()
        _forget_on_commit(session)
    published.sort(key=lambda r: (r.active_from, r.kid), reverse=True)
    return KeyRing(signing=_open(settings, signing), published=tuple(r.public_jwk for r in published))
