"""Password hashes for local console admins: scrypt (RFC 7914) from the standard library, salted, memory-hard.

A human-chosen password, unlike a 256-bit token, needs a slow hash: scrypt with N=2^15, r=8, p=3
(one of OWASP's recommended scrypt settings) costs each guess ~32 MiB and tens of milliseconds.
The parameters are stored in each hash, so they can be raised later without breaking old ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["hash_password", "verify_password"]

_N, _R, _P = 2**15, 8, 3
_MAXMEM = 64 * 1024 * 1024
_DUMMY = None  # lazily made: a hash compared when the user is unknown, so timing does not reveal it


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$<salt b64>$<key b64>`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    key = _derive(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; ``None`` (no such admin) costs the same and is ``False``."""
    global _DUMMY
    if stored is None:
        _DUMMY = _DUMMY or hash_password(secrets.token_urlsafe(16))
        verify_password(password, _DUMMY)
        return False
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        derived = _derive(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(derived, base64.b64decode(key))
