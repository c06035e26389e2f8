"""The RFC 9162 Merkle tree over the audit records, kept in the database.

**Order.** Leaves are not ordered by ``audit_record.id``: PostgreSQL hands out ids before commit,
so a transaction with a lower id may commit after a checkpoint covered higher ones. A trigger
(made by the migration) queues every new record in ``audit_pending`` in the writer's own
transaction, so the queue holds exactly the committed records not yet in the tree. The sequencer,
one process at a time (``audit_tree`` row lock, SKIP LOCKED; SQLite's BEGIN IMMEDIATE), takes them
in id order and gives them the next leaf indices (``audit_leaf``).

**Storage and cost.** Every complete subtree's hash is stored once, when its last leaf arrives
(``audit_node``, level 0 = the leaf hashes: about 2n rows for n leaves) and never changes. A root,
an inclusion proof (§2.1.3) or a consistency proof (§2.1.4) needs O(log n) of them (the
``merkle`` plans), read in one primary-key ``IN`` query: a proof never reads the log itself. Appending is
O(1) amortised (one node per leaf) plus reading the O(log n) right edge once per batch.
``audit_leaf`` and ``audit_node`` are append-only at the database, like ``audit_record``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Index, LargeBinary, bindparam, delete, insert, text
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, func, select

from broker.audit.errors import LeafMismatch, OutOfRange
from broker.audit.log import AuditRecord, leaf_data, record_entry
from broker.audit.merkle import (
    CompactRange,
    Node,
    assemble,
    consistency_plan,
    hash_leaf,
    inclusion_plan,
    subtree_nodes,
)
from broker.types import UTCDateTime, utcnow

__all__ = [
    "AuditLeaf",
    "AuditNode",
    "AuditPending",
    "AuditTree",
    "compact_range",
    "consistency_proof",
    "enqueue_missing",
    "inclusion_proof",
    "inclusion_proofs",
    "lock_tree",
    "node_key",
    "root_at",
    "sequence",
    "tree_size",
]

_TREE_ID = 1
_LEVEL_SHIFT = 40
"""Room for 2**40 leaves per level in a node key."""
_CHUNK = 400
"""Nodes per lookup query: well under SQLite's bound-parameter limit."""


class AuditTree(SQLModel, table=True):
    """The sequencer's mutex (locked per run) and the number of leaves in the tree."""

    __tablename__ = "audit_tree"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    size: int = Field(default=0)


class AuditPending(SQLModel, table=True):
    """A committed record not yet in the tree; filled by a trigger on ``audit_record``, drained by ``sequence``."""

    __tablename__ = "audit_pending"

    record_id: int = Field(primary_key=True, foreign_key="audit_record.id", sa_column_kwargs={"autoincrement": False})


class AuditLeaf(SQLModel, table=True):
    """The position of a record in the tree, given once. Never updated, never deleted."""

    __tablename__ = "audit_leaf"
    __table_args__ = (Index("ix_audit_leaf_partner", "partner_id", "leaf_index"),)

    leaf_index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    record_id: int = Field(foreign_key="audit_record.id", unique=True)
    partner_id: str | None = Field(default=None, max_length=36)
    """The record's partner, copied here so a partner's slice is one index range scan."""
    sequenced_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AuditNode(SQLModel, table=True):
    """The hash of a complete subtree, ``Node(level, position)``: ``2**level`` leaves from ``position * 2**level``.

    Keyed by one integer, ``node_key`` = (level << 40) | position, so any set of nodes is one
    primary-key ``IN`` lookup; a leaf's key is its leaf index.
    """

    __tablename__ = "audit_node"

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


def node_key(node: Node) -> int:
    """The ``audit_node.id`` of a complete subtree."""
    return (node.level << _LEVEL_SHIFT) | node.index


_NODES = AuditNode.__table__  # type: ignore[attr-defined]
_TREE = AuditTree.__table__  # type: ignore[attr-defined]
_LEAVES = AuditLeaf.__table__  # type: ignore[attr-defined]
_PENDING = AuditPending.__table__  # type: ignore[attr-defined]
_RECORDS = AuditRecord.__table__  # type: ignore[attr-defined]


def lock_tree(session: Session, *, wait: bool = False) -> AuditTree | None:
    """The tree's mutex row, locked for this transaction; ``None`` if another process holds it (unless ``wait``)."""
    query = select(AuditTree).where(col(AuditTree.id) == _TREE_ID)
    if session.connection().dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=not wait)
    tree = session.exec(query).first()
    if tree is None:
        if session.exec(select(func.count()).select_from(AuditTree)).one():
            return None
        tree = AuditTree(id=_TREE_ID, size=0)
        session.add(tree)
        session.flush()
    return tree


_SIZE = sa_select(_TREE.c.size).where(_TREE.c.id == _TREE_ID)
_HASHES = sa_select(_NODES.c.id, _NODES.c.hash).where(_NODES.c.id.in_(bindparam("keys", expanding=True)))
_DEQUEUE = delete(_PENDING).where(_PENDING.c.record_id == bindparam("record_id"))
"""Built once: proofs run these on every request, and building a statement costs more than running it."""

# PostgreSQL: a batch's leaves, nodes and dequeue as three statements of one array per column. psycopg
# runs an executemany as one statement per row (a few dozen microseconds of client CPU each, three or
# four rows per record); SQLite's executemany is a loop in C and stays as it is.
_PG_LEAVES = text(
    "INSERT INTO audit_leaf (leaf_index, record_id, partner_id, sequenced_at) "
    "SELECT leaf_index, record_id, partner_id, :sequenced_at "
    "FROM unnest(CAST(:leaf_index AS bigint[]), CAST(:record_id AS bigint[]), CAST(:partner_id AS varchar[])) "
    "AS batch (leaf_index, record_id, partner_id)"
).bindparams(bindparam("sequenced_at", type_=UTCDateTime()))
_PG_NODES = text(
    "INSERT INTO audit_node (id, hash) SELECT * FROM unnest(CAST(:id AS bigint[]), CAST(:hash AS bytea[]))"
)
_PG_DEQUEUE = text("DELETE FROM audit_pending WHERE record_id = ANY(CAST(:record_id AS bigint[]))")


def tree_size(session: Session) -> int:
    """Leaves sequenced so far (committed); 0 for an empty tree."""
    size = session.connection().execute(_SIZE).scalar()
    return int(size or 0)


def _hashes(session: Session, nodes: Iterable[Node]) -> dict[Node, bytes]:
    """Stored hashes of these complete subtrees: one primary-key lookup per few hundred nodes."""
    wanted = {node_key(n): n for n in nodes}
    keys = sorted(wanted)
    found: dict[Node, bytes] = {}
    for start in range(0, len(keys), _CHUNK):
        rows = session.connection().execute(_HASHES, {"keys": keys[start : start + _CHUNK]})
        found.update({wanted[key]: bytes(h) for key, h in rows})
    missing = [wanted[k] for k in keys if wanted[k] not in found]
    if missing:
        raise OutOfRange(f"the tree has no subtree at level {missing[0].level}, position {missing[0].index} yet")
    return found


def compact_range(session: Session, size: int) -> CompactRange:
    """The right edge of the tree at ``size`` leaves (O(log n) stored hashes)."""
    nodes = subtree_nodes(0, size)
    hashes = _hashes(session, nodes)
    return CompactRange.of(size, [hashes[n] for n in nodes])


def _check_size(session: Session, size: int) -> None:
    current = tree_size(session)
    if not 0 <= size <= current:
        raise OutOfRange(f"the tree has {current} leaves, not {size}")


def root_at(session: Session, size: int) -> bytes:
    """MTH of the first ``size`` leaves (RFC 9162 §2.1.1)."""
    _check_size(session, size)
    return compact_range(session, size).root()


def inclusion_proof(session: Session, *, leaf_index: int, tree_size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 audit path of a leaf in the tree of ``tree_size`` leaves."""
    return inclusion_proofs(session, leaf_indices=[leaf_index], tree_size=tree_size)[leaf_index]


def inclusion_proofs(session: Session, *, leaf_indices: Sequence[int], tree_size: int) -> dict[int, list[bytes]]:
    """Audit paths of several leaves at once (one lookup for all their nodes)."""
    _check_size(session, tree_size)
    plans = {i: inclusion_plan(i, tree_size) for i in leaf_indices}
    hashes = _hashes(session, (n for plan in plans.values() for nodes in plan for n in nodes))
    return {i: assemble(plan, hashes) for i, plan in plans.items()}


def consistency_proof(session: Session, *, first: int, second: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 proof that the tree of ``second`` leaves extends the one of ``first``."""
    _check_size(session, second)
    plan = consistency_plan(first, second)
    return assemble(plan, _hashes(session, (n for nodes in plan for n in nodes)))


def _pending_records(session: Session, limit: int) -> list[Any]:
    query = (
        sa_select(_RECORDS).join(_PENDING, _PENDING.c.record_id == _RECORDS.c.id).order_by(_RECORDS.c.id).limit(limit)
    )
    return list(session.connection().execute(query))


def _leaf_hash_of(row: Any) -> bytes:
    """The record's leaf hash, its data checked against the digest written with it: a mismatch is tampering."""
    data = leaf_data(record_entry(row))
    if hashlib.sha256(data).hexdigest() != row.leaf_sha256:
        raise LeafMismatch(f"audit record {row.id} no longer matches the digest written with it; not logging it")
    return hash_leaf(data)


def sequence(session: Session, tree: AuditTree, *, limit: int = 5000) -> int:
    """Give the next ``limit`` pending records (in id order) the next leaf indices; returns how many.

    The caller holds ``tree`` (``lock_tree``) and commits. Raises LeafMismatch, leaving everything
    unsequenced, if a record's content does not match its digest.
    """
    rows = _pending_records(session, limit)
    if not rows:
        return 0
    edge = compact_range(session, tree.size)
    now = utcnow()
    leaves: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    for row in rows:
        leaves.append({"leaf_index": edge.size, "record_id": row.id, "partner_id": row.partner_id, "sequenced_at": now})
        nodes.extend({"id": node_key(n), "hash": h} for n, h in edge.append(_leaf_hash_of(row)))
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(
            _PG_LEAVES,
            {
                "sequenced_at": now,
                **{name: [leaf[name] for leaf in leaves] for name in ("leaf_index", "record_id", "partner_id")},
            },
        )
        connection.execute(_PG_NODES, {"id": [n["id"] for n in nodes], "hash": [n["hash"] for n in nodes]})
        connection.execute(_PG_DEQUEUE, {"record_id": [row.id for row in rows]})
    else:
        connection.execute(insert(_LEAVES), leaves)
        connection.execute(insert(_NODES), nodes)
        connection.execute(_DEQUEUE, [{"record_id": row.id} for row in rows])
    tree.size = edge.size
    session.add(tree)
    session.flush()
    return len(rows)


def enqueue_missing(session: Session) -> int:
    """Queue records that are neither in the tree nor pending (defence in depth: O(n), for operators)."""
    orphans = (
        sa_select(_RECORDS.c.id)
        .where(~sa_select(_LEAVES.c.record_id).where(_LEAVES.c.record_id == _RECORDS.c.id).exists())
        .where(~sa_select(_PENDING.c.record_id).where(_PENDING.c.record_id == _RECORDS.c.id).exists())
    )
    queued = session.connection().execute(
        insert(_PENDING).from_select(["record_id"], orphans).returning(_PENDING.c.record_id)
    )
    return len(queued.all())
