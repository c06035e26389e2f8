"""Append-only audit records, written in the same transaction as the change they describe.

Each record carries ``leaf_sha256``, the SHA-256 of its *entry*: the canonical JSON
(``canonical_json``) of the object ``record_entry`` builds. Those same entry bytes are the record's
RFC 9162 Merkle leaf data (``leaf_data``), so anyone holding an exported entry recomputes both
hashes. The database refuses UPDATE and DELETE on this table (triggers made by the migration).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import JSON, Column, insert, text
from sqlmodel import Field, Session, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = [
    "Actor",
    "AppendedAudit",
    "AuditItem",
    "AuditRecord",
    "RecordFields",
    "append_audit",
    "append_audits",
    "canonical_json",
    "digest",
    "leaf_data",
    "record_entry",
    "record_params",
]


@dataclass(frozen=True)
class Actor:
    """Who made a change: a partner's SCIM token, an operator at the CLI, or Entente itself."""

    kind: str  #: "scim_token" | "cli" | "system"
    id: str  #: token id, OS user name, or job name


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, UTF-8) so digests are reproducible by any party."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def digest(value: Any) -> str | None:
    """SHA-256 hex of a resource's canonical JSON; ``None`` stands for "did not exist"."""
    if value is None:
        return None
    return hashlib.sha256(canonical_json(value)).hexdigest()


class AuditRecord(SQLModel, table=True):
    """One accepted change. Never updated, never deleted."""

    __tablename__ = "audit_record"

    id: int | None = Field(default=None, primary_key=True)
    occurred_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    partner_id: str | None = Field(default=None, index=True, max_length=36)
    actor_kind: str = Field(max_length=32)
    actor_id: str = Field(max_length=200)
    action: str = Field(max_length=64)
    resource_type: str | None = Field(default=None, max_length=32)
    resource_id: str | None = Field(default=None, max_length=64)
    before_sha256: str | None = Field(default=None, max_length=64)
    after_sha256: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    leaf_sha256: str = Field(max_length=64)
    """SHA-256 of the record's canonical form (everything above), for the Merkle log."""


def _entry(
    occurred_at: dt.datetime,
    partner_id: str | None,
    actor_kind: str,
    actor_id: str,
    action: str,
    resource_type: str | None,
    resource_id: str | None,
    before_sha256: str | None,
    after_sha256: str | None,
    detail: dict[str, Any],
) -> dict[str, Any]:
    return {
        "occurred_at": occurred_at.isoformat(),
        "partner_id": partner_id,
        "actor": [actor_kind, actor_id],
        "action": action,
        "resource": [resource_type, resource_id],
        "before": before_sha256,
        "after": after_sha256,
        "detail": detail,
    }


class RecordFields(Protocol):
    """What ``record_entry`` reads: an ``AuditRecord``, or a row selected from its table."""

    occurred_at: dt.datetime
    partner_id: str | None
    actor_kind: str
    actor_id: str
    action: str
    resource_type: str | None
    resource_id: str | None
    before_sha256: str | None
    after_sha256: str | None
    detail: dict[str, Any]


def record_entry(record: RecordFields) -> dict[str, Any]:
    """What a record says, as the JSON object its hashes cover (everything but ``id`` and ``leaf_sha256``).

    Keys: ``occurred_at`` (ISO 8601, UTC offset), ``partner_id``, ``actor`` ([kind, id]), ``action``,
    ``resource`` ([type, id]), ``before`` and ``after`` (SHA-256 hex or null), ``detail`` (object).
    """
    return _entry(
        record.occurred_at,
        record.partner_id,
        record.actor_kind,
        record.actor_id,
        record.action,
        record.resource_type,
        record.resource_id,
        record.before_sha256,
        record.after_sha256,
        record.detail,
    )


def leaf_data(entry: dict[str, Any]) -> bytes:
    """RFC 9162 §2.1.1 leaf data of a record: the canonical JSON of its entry; ``leaf_sha256`` is its SHA-256."""
    return canonical_json(entry)


_INSERT = insert(AuditRecord.__table__).returning(AuditRecord.__table__.c.id)  # type: ignore[attr-defined]
"""Built once: per call only parameters are bound (statement construction is most of an INSERT's cost)."""


@dataclass(frozen=True)
class AppendedAudit:
    """What a caller needs of a record it just appended: its id, for the events it explains."""

    id: int
    leaf_sha256: str


@dataclass(frozen=True)
class AuditItem:
    """One record of a batch written by ``append_audits`` (all by one actor)."""

    action: str
    partner_id: str | None
    resource_type: str | None = None
    resource_id: str | None = None
    detail: dict[str, Any] | None = None
    before: Any = None
    after: Any = None


def record_params(
    actor: Actor,
    action: str,
    partner_id: str | None,
    resource_type: str | None,
    resource_id: str | None,
    before: Any,
    after: Any,
    detail: dict[str, Any] | None,
) -> dict[str, Any]:
    """The row of one record, its ``leaf_sha256`` computed from its entry (for writers that insert it
    in a statement of their own, such as ``broker.lifecycle.events.record_change``)."""
    occurred_at = utcnow()
    before_sha256, after_sha256, detail = digest(before), digest(after), detail or {}
    entry = _entry(
        occurred_at,
        partner_id,
        actor.kind,
        actor.id,
        action,
        resource_type,
        resource_id,
        before_sha256,
        after_sha256,
        detail,
    )
    return {
        "occurred_at": occurred_at,
        "partner_id": partner_id,
        "actor_kind": actor.kind,
        "actor_id": actor.id,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "before_sha256": before_sha256,
        "after_sha256": after_sha256,
        "detail": detail,
        "leaf_sha256": hashlib.sha256(leaf_data(entry)).hexdigest(),
    }


def append_audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    partner_id: str | None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    before: Any = None,
    after: Any = None,
    detail: dict[str, Any] | None = None,
) -> AppendedAudit:
    """Insert an audit record in the caller's transaction; it becomes durable with the change it describes.

    A Core INSERT rather than an ORM object: records are never read back in the request that
    writes them, and the unit of work would cost more than the rest of a SCIM write.
    """
    params = record_params(actor, action, partner_id, resource_type, resource_id, before, after, detail)
    record_id: int = session.execute(_INSERT, params).scalar_one()
    return AppendedAudit(id=record_id, leaf_sha256=params["leaf_sha256"])


_INSERT_MANY = insert(AuditRecord.__table__).returning(  # type: ignore[attr-defined]
    AuditRecord.__table__.c.id,  # type: ignore[attr-defined]
    sort_by_parameter_order=True,
)
_INSERT_WITH_IDS = insert(AuditRecord.__table__)  # type: ignore[attr-defined]
_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence('audit_record', 'id')) FROM generate_series(1, :n)")
"""PostgreSQL: ``n`` new record ids from the column's own sequence, in one round trip."""


def append_audits(session: Session, *, actor: Actor, items: Sequence[AuditItem]) -> list[int]:
    """Insert many records in the caller's transaction, in the order given; their ids in the same order.

    For batches (the delivery worker's receipts, a Bulk request's creations): no round trip per record.
    SQLite: SQLAlchemy's multi-row "insertmanyvalues" INSERT ... RETURNING. PostgreSQL: the ids are
    drawn from the sequence first, then the rows go in one executemany that psycopg pipelines (a
    thousand-row INSERT ... RETURNING is one statement of 11,000 parameters, which psycopg re-parses
    in Python every time: a seventh of a Bulk import's CPU).
    """
    if not items:
        return []
    rows = [
        record_params(actor, i.action, i.partner_id, i.resource_type, i.resource_id, i.before, i.after, i.detail)
        for i in items
    ]
    if len(rows) == 1 or session.get_bind().dialect.name != "postgresql":
        return list(session.execute(_INSERT_MANY, rows).scalars())
    ids = sorted(int(i) for i in session.execute(_NEXT_IDS, {"n": len(rows)}).scalars())
    session.execute(_INSERT_WITH_IDS, [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
    return ids
