"""Signed checkpoints of the audit tree (c2sp.org/tlog-checkpoint over RFC 9162 §2.1 roots; Ed25519).

The checkpointer runs every second in the process that runs the scheduler (``entente serve`` with
its delivery worker, or ``entente worker``): it sequences pending records (``tree.sequence``) and
signs a checkpoint when the tree has grown and either ``audit_checkpoint_max_records`` records came
in or ``audit_checkpoint_interval_seconds`` passed since the last one. Before signing it checks the
new tree against the previous checkpoint with a consistency proof (§2.1.4.2), so it never signs a
history that contradicts one it signed before. One checkpoint per tree size, append-only.

The signing key is ``ENTENTE_AUDIT_SIGNING_KEY`` (base64 of a 32-byte Ed25519 seed, or a PKCS#8 PEM)
or, unset, the file ``ENTENTE_AUDIT_SIGNING_KEY_FILE``, created with mode 0600 on first use.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from sqlalchemy import Column, Engine, Integer, LargeBinary, Text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, select

from broker.audit.errors import AuditError, NoSuchCheckpoint, RootMismatch, SigningKeyError
from broker.audit.merkle import verify_consistency
from broker.audit.note import ED25519, Checkpoint, VerifierKey, raw_public_key, sign_note
from broker.audit.tree import AuditTree, compact_range, consistency_proof, lock_tree, sequence
from broker.settings import Settings
from broker.types import UTCDateTime, utcnow

__all__ = [
    "AuditCheckpoint",
    "LogKey",
    "checkpoint_at",
    "latest_checkpoint",
    "load_log_key",
    "make_checkpoint",
    "run_checkpointer",
]

log = logging.getLogger("entente.audit")
_RUN_LIMIT = 50_000
"""Records one scheduled run sequences at most, so a backlog (a migrated log) commits in bounded steps."""


class AuditCheckpoint(SQLModel, table=True):
    """A signed tree head. Never updated, never deleted."""

    __tablename__ = "audit_checkpoint"

    tree_size: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    root_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    signed_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    """The note's ``time`` line, as a datetime (whole seconds)."""
    key_id: str = Field(max_length=8)
    verifier_key: str = Field(max_length=512)
    """The log key that signed it, in signed-note verifier-key form (``name+hexid+base64``)."""
    note: str = Field(sa_column=Column(Text, nullable=False))
    """The signed note exactly as signed: checkpoint text, blank line, the log's signature line."""


@dataclass(frozen=True)
class LogKey:
    """The log's signing key and the name (= checkpoint origin) it signs under."""

    origin: str
    private_key: Ed25519PrivateKey

    @property
    def verifier_key(self) -> VerifierKey:
        return VerifierKey(self.origin, ED25519, raw_public_key(self.private_key.public_key()))


def _origin(settings: Settings) -> str:
    if settings.audit_origin:
        return settings.audit_origin
    host = urlsplit(settings.public_base_url).netloc or "entente"
    return f"{host}/audit"


def _parse_key(text: str, where: str) -> Ed25519PrivateKey:
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_private_key(text.encode(), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SigningKeyError(f"{where} is not an Ed25519 key (base64 32-byte seed or PKCS#8 PEM)") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{where} is not an Ed25519 key")
    return key


_KEYS: dict[tuple[str, str], Ed25519PrivateKey] = {}


def load_log_key(settings: Settings) -> LogKey:
    """The configured signing key (created in the key file if there is none), read once per process."""
    secret = settings.audit_signing_key.get_secret_value() if settings.audit_signing_key else ""
    cache_key = (secret, settings.audit_signing_key_file)
    if cache_key not in _KEYS:
        if secret:
            _KEYS[cache_key] = _parse_key(secret, "ENTENTE_AUDIT_SIGNING_KEY")
        else:
            path = Path(settings.audit_signing_key_file)
            try:
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(pem)
                text = path.read_text()
            except FileExistsError:  # another process made it just now
                text = path.read_text()
            except OSError as exc:
                raise SigningKeyError(f"audit signing key file {path}: {exc.strerror}") from exc
            _KEYS[cache_key] = _parse_key(text, f"audit signing key file {path}")
    return LogKey(_origin(settings), _KEYS[cache_key])


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.tree_size).desc()).limit(1)).first()


def checkpoint_at(session: Session, tree_size: int) -> AuditCheckpoint:
    found = session.get(AuditCheckpoint, tree_size)
    if found is None:
        raise NoSuchCheckpoint(f"no checkpoint was signed at tree size {tree_size}")
    return found


def _sign(session: Session, tree: AuditTree, key: LogKey, previous: AuditCheckpoint | None) -> AuditCheckpoint:
    root = compact_range(session, tree.size).root()
    if previous is not None:
        proof = consistency_proof(session, first=previous.tree_size, second=tree.size)
        try:
            verify_consistency(previous.tree_size, tree.size, proof, previous.root_hash, root)
        except AuditError as exc:
            raise RootMismatch(
                f"refusing to sign: the tree of {tree.size} leaves does not extend checkpoint {previous.tree_size}"
            ) from exc
    now = utcnow().replace(microsecond=0)
    checkpoint = Checkpoint(key.origin, tree.size, root, int(now.timestamp()))
    row = AuditCheckpoint(
        tree_size=tree.size,
        root_hash=root,
        signed_at=now,
        key_id=key.verifier_key.key_id.hex(),
        verifier_key=key.verifier_key.encode(),
        note=sign_note(checkpoint.text(), key.origin, key.private_key),
    )
    session.add(row)
    session.flush()
    return row


def _due(tree: AuditTree, previous: AuditCheckpoint | None, settings: Settings, *, force: bool) -> bool:
    if previous is not None and tree.size <= previous.tree_size:
        return False
    if force or previous is None:
        return tree.size > 0
    waited = utcnow() - previous.signed_at
    return tree.size - previous.tree_size >= settings.audit_checkpoint_max_records or waited >= dt.timedelta(
        seconds=settings.audit_checkpoint_interval_seconds
    )


def make_checkpoint(
    session: Session, settings: Settings, *, force: bool = False, wait: bool = False, limit: int | None = None
) -> AuditCheckpoint | None:
    """Sequence pending records (all of them, or about ``limit``), then sign a checkpoint if one is
    due (``force``: whenever the tree grew); commits. Returns the new checkpoint, or ``None`` if none
    was signed (nothing due, or another process holds the tree and ``wait`` is false)."""
    key = load_log_key(settings)
    tree = lock_tree(session, wait=wait)
    if tree is None:
        session.rollback()
        return None
    sequenced = 0
    while (limit is None or sequenced < limit) and (batch := sequence(session, tree)):
        sequenced += batch
    previous = latest_checkpoint(session)
    made = _sign(session, tree, key, previous) if _due(tree, previous, settings, force=force) else None
    session.commit()
    return made


def run_checkpointer(engine: Engine, settings: Settings) -> AuditCheckpoint | None:
    """One run of the scheduled job; failures are logged on one line, and the next run retries."""
    try:
        with Session(engine, expire_on_commit=False) as session:
            made = make_checkpoint(session, settings, limit=_RUN_LIMIT)
    except AuditError as exc:
        log.error("audit checkpoint not made: %s", exc.detail)
        return None
    except SQLAlchemyError as exc:
        log.warning("audit checkpoint not made: %s", str(getattr(exc, "orig", exc) or exc).splitlines()[0])
        return None
    if made is not None:
        log.debug("audit checkpoint signed at tree size %d", made.tree_size)
    return made
