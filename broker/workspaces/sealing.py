"""Encryption at rest of workspace credentials (Fernet: AES-128-CBC + HMAC-SHA256, from ``cryptography``).

The key comes from ``ENTENTE_SECRET_KEY`` (or the ``secret_key`` file in ``ENTENTE_SECRETS_DIR``). On the
embedded default without one, a key file is created next to the database with mode 0600, so a fresh
machine works and the database file alone never reveals a credential.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from broker.errors import BrokerError
from broker.settings import Settings

__all__ = ["SealingError", "open_sealed", "seal"]


class SealingError(BrokerError):
    """A sealed value cannot be opened: wrong or rotated-away key, or a tampered ciphertext."""


def _key_file(settings: Settings) -> Path:
    return Path(settings.secret_key_file)


def _fernet(settings: Settings) -> MultiFernet:
    """The current key first; older keys after it still open values sealed before a rotation."""
    if settings.secret_key is not None:
        keys = settings.secret_key.get_secret_value().split(",")
    else:
        path = _key_file(settings)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(Fernet.generate_key().decode())
        keys = path.read_text().strip().split(",")
    try:
        return MultiFernet([Fernet(key.strip().encode()) for key in keys if key.strip()])
    except ValueError as exc:
        raise SealingError(f"ENTENTE_SECRET_KEY is not a Fernet key (32 url-safe base64 bytes): {exc}") from exc


def seal(settings: Settings, value: dict[str, Any]) -> str:
    """Encrypt a JSON object with the current key."""
    return _fernet(settings).encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def open_sealed(settings: Settings, token: str) -> dict[str, Any]:
    """Decrypt what ``seal`` produced; a wrong key or tampering is a ``SealingError``, never garbage."""
    try:
        opened: dict[str, Any] = json.loads(_fernet(settings).decrypt(token.encode()))
    except InvalidToken as exc:
        raise SealingError("a sealed workspace config cannot be opened with the configured secret key") from exc
    return opened
