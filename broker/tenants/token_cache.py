"""A short-lived, per-database cache of verified SCIM tokens.

What it saves: the secret's verification, the partner and domain lookups, the once-a-minute
``last_used_at`` write, and the separate thread hop and transaction they need before a request's
own work. What it does not save: every request still confirms, in its own transaction, that the
token is not revoked or expired and its partner not suspended (``confirm_scim_token``, one
primary-key read), so revocation from any process, the CLI included, applies to the next request.
Only the partner's verified domains are reused unconfirmed, for at most ``ttl`` seconds
(``ENTENTE_SCIM_AUTH_CACHE_SECONDS``; 0 turns the cache off).

Entries are keyed by the SHA-256 of the presented token, never by the token itself, and only
successful verifications get in: a wrong or unknown token always takes the full path with its
constant-time comparison. Looking a digest up in a dict tells nothing about stored secrets, since
nobody can choose an input whose digest lands near another's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

__all__ = ["AuthenticatedToken", "TokenCache", "token_cache"]

_MAX_ENTRIES = 4096
"""Only valid tokens get in, so this bounds memory against many tokens, not against attackers."""


@dataclass(frozen=True, slots=True)
class AuthenticatedToken:
    """What a successful verification established: the token, its partner and the partner's domains."""

    token_id: str
    partner_id: str
    partner_slug: str
    domain_policy: str
    domains: frozenset[str]
    expires_at: dt.datetime


class TokenCache:
    """Token digest -> AuthenticatedToken for at most ``ttl`` seconds; safe to share between threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[bytes, tuple[float, AuthenticatedToken]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(presented: str) -> bytes:
        return hashlib.sha256(presented.encode()).digest()

    def get(self, presented: str, *, ttl: float, now: dt.datetime) -> AuthenticatedToken | None:
        """The cached verification, unless older than ``ttl`` seconds or past the token's expiry."""
        if ttl <= 0:
            return None
        entry = self._entries.get(self._key(presented))
        if entry is None:
            return None
        stored_at, token = entry
        if self._clock() - stored_at >= ttl or token.expires_at <= now:
            return None
        return token

    def put(self, presented: str, token: AuthenticatedToken, *, ttl: float) -> None:
        """Remember a successful verification."""
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[self._key(presented)] = (self._clock(), token)


_BY_ENGINE: weakref.WeakKeyDictionary[Engine, TokenCache] = weakref.WeakKeyDictionary()
_BY_ENGINE_LOCK = threading.Lock()


def token_cache(engine: Engine) -> TokenCache:
    """The cache for one database: a token is only ever valid against the database that issued it."""
    cache = _BY_ENGINE.get(engine)
    if cache is None:
        with _BY_ENGINE_LOCK:
            cache = _BY_ENGINE.setdefault(engine, TokenCache())
    return cache
