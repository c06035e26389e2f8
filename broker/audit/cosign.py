"""Partner cosignatures of checkpoints (c2sp.org/tlog-cosignature ``cosignature/v1``, Ed25519).

A partner registers an Ed25519 public key (`entente partner audit-key`), verifies a checkpoint
against its own earlier ones (consistency proofs), then POSTs a cosignature line over it. Stored
cosignatures are appended to the checkpoint note every reader fetches: once a partner has cosigned
size N, the operator cannot present a history that rewrites the first N records without every
reader holding that note, and the partner itself, noticing. Cosignatures are append-only.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import Column, LargeBinary, Text, UniqueConstraint
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from broker.audit.checkpoints import checkpoint_at
from broker.audit.errors import BadSignature, UnknownCosigner
from broker.audit.log import Actor, append_audit
from broker.audit.note import ED25519_COSIGNATURE, NoteSignature, VerifierKey, raw_public_key, split_note
from broker.audit.note import verify_cosignature as verify_line
from broker.errors import InvalidValue, NotFound
from broker.tenants.models import Partner
from broker.types import UTCDateTime, utcnow

__all__ = [
    "AuditCosignature",
    "AuditPartnerKey",
    "add_cosignature",
    "cosigned_note",
    "parse_public_key",
    "register_partner_key",
]

FUTURE_SKEW = dt.timedelta(minutes=5)
_VKEY = re.compile(r"^[^\s+]+\+[0-9a-fA-F]{8}\+")


class AuditPartnerKey(SQLModel, table=True):
    """A partner's cosigning key (type 0x04 verifier key)."""

    __tablename__ = "audit_partner_key"
    __table_args__ = (UniqueConstraint("name", "key_id", name="uq_audit_partner_key_name_id"),)

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=36, foreign_key="partner.id", ondelete="CASCADE", index=True)
    name: str = Field(max_length=200)
    key_id: str = Field(max_length=8)
    public_key: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))

    def verifier_key(self) -> VerifierKey:
        return VerifierKey(self.name, ED25519_COSIGNATURE, self.public_key)


class AuditCosignature(SQLModel, table=True):
    """A verified cosignature line over one checkpoint. Never updated, never deleted."""

    __tablename__ = "audit_cosignature"
    __table_args__ = (UniqueConstraint("tree_size", "key_ref", name="uq_audit_cosignature_checkpoint_key"),)

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(foreign_key="audit_checkpoint.tree_size", index=True)
    key_ref: int = Field(foreign_key="audit_partner_key.id")
    partner_id: str = Field(max_length=36)
    cosigned_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    """The timestamp inside the cosignature."""
    line: str = Field(sa_column=Column(Text, nullable=False))
    """The signature line, ``— <name> <base64>``, as appended to the checkpoint note."""


def parse_public_key(text: str, *, default_name: str) -> VerifierKey:
    """A cosigning key from a PEM Ed25519 public key (``openssl pkey -pubout``), a base64 raw key, or a
    type 0x04 verifier key ``name+hexid+base64`` (whose name wins over ``default_name``)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_public_key(text.encode())
        except ValueError as exc:
            raise InvalidValue("the PEM file holds no public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidValue("the public key is not an Ed25519 key")
        return VerifierKey(default_name, ED25519_COSIGNATURE, raw_public_key(key))
    if _VKEY.match(text):
        try:
            vkey = VerifierKey.parse(text)
        except BadSignature as exc:
            raise InvalidValue(exc.detail) from exc
        if vkey.kind != ED25519_COSIGNATURE:
            raise InvalidValue("a cosigning verifier key has type 0x04 (c2sp.org/tlog-cosignature)")
        return vkey
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidValue("expected a PEM public key, a base64 32-byte key or a verifier key") from exc
    if len(raw) != 32:
        raise InvalidValue(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return VerifierKey(default_name, ED25519_COSIGNATURE, raw)


def register_partner_key(*, session: Session, slug: str, key: VerifierKey, actor: Actor) -> AuditPartnerKey:
    """Register a partner's cosigning key (idempotent for the same key); audited; commits."""
    partner = session.exec(select(Partner).where(Partner.slug == slug)).first()
    if partner is None:
        raise NotFound(f"no partner '{slug}'")
    existing = session.exec(
        select(AuditPartnerKey).where(AuditPartnerKey.name == key.name, AuditPartnerKey.key_id == key.key_id.hex())
    ).first()
    if existing is not None:
        if existing.partner_id != partner.id or existing.public_key != key.public_key:
            raise InvalidValue(f"key name {key.name} with id {key.key_id.hex()} is already registered")
        return existing
    row = AuditPartnerKey(partner_id=partner.id, name=key.name, key_id=key.key_id.hex(), public_key=key.public_key)
    session.add(row)
    session.flush()
    append_audit(
        session,
        actor=actor,
        action="audit.partner_key.added",
        partner_id=partner.id,
        resource_type="AuditKey",
        resource_id=row.key_id,
        after={"name": key.name, "verifier_key": key.encode()},
    )
    session.commit()
    return row


def add_cosignature(*, session: Session, partner_id: str, tree_size: int, line: str, actor: Actor) -> AuditCosignature:
    """Verify and store a partner's cosignature over checkpoint ``tree_size``; idempotent; audited; commits."""
    checkpoint = checkpoint_at(session, tree_size)
    text, _ = split_note(checkpoint.note)
    signature = NoteSignature.parse(line if line.endswith("\n") else line + "\n")
    key = session.exec(
        select(AuditPartnerKey).where(
            AuditPartnerKey.partner_id == partner_id,
            AuditPartnerKey.name == signature.name,
            AuditPartnerKey.key_id == signature.key_id.hex(),
        )
    ).first()
    if key is None or key.id is None:
        raise UnknownCosigner(f"no cosigning key {signature.name} ({signature.key_id.hex()}) is registered for you")
    timestamp = verify_line(text, signature, key.verifier_key())
    cosigned_at = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    if cosigned_at > utcnow() + FUTURE_SKEW:
        raise BadSignature("the cosignature's timestamp is in the future")
    existing = session.exec(
        select(AuditCosignature).where(AuditCosignature.tree_size == tree_size, AuditCosignature.key_ref == key.id)
    ).first()
    if existing is not None:
        return existing
    row = AuditCosignature(
        tree_size=tree_size, key_ref=key.id, partner_id=partner_id, cosigned_at=cosigned_at, line=signature.line()
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # the same cosignature, stored by a concurrent request
        session.rollback()
        return session.exec(
            select(AuditCosignature).where(AuditCosignature.tree_size == tree_size, AuditCosignature.key_ref == key.id)
        ).one()
    append_audit(
        session,
        actor=actor,
        action="audit.checkpoint.cosigned",
        partner_id=partner_id,
        resource_type="AuditCheckpoint",
        resource_id=str(tree_size),
        detail={"key": key.verifier_key().encode(), "cosigned_at": cosigned_at.isoformat()},
    )
    session.commit()
    return row


def cosigned_note(session: Session, *, tree_size: int, note: str) -> str:
    """The checkpoint note with every stored cosignature line appended (signed-note allows many)."""
    lines = session.exec(
        select(AuditCosignature.line).where(AuditCosignature.tree_size == tree_size).order_by(col(AuditCosignature.id))
    ).all()
    return note + "".join(lines)
