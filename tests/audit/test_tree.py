"""The Merkle tree in the database: commit order, append-only tables, stored proofs, checkpoint cadence."""

from __future__ import annotations

import base64
import logging
import time

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, func, select

from broker.audit.checkpoints import latest_checkpoint, make_checkpoint, run_checkpointer
from broker.audit.errors import LeafMismatch, RootMismatch
from broker.audit.log import Actor, AuditRecord, append_audit, canonical_json, record_entry
from broker.audit.merkle import Node, hash_children, hash_leaf, root_hash, verify_consistency
from broker.audit.merkle import consistency_proof as memory_consistency
from broker.audit.merkle import inclusion_proof as memory_inclusion
from broker.audit.note import Checkpoint, VerifierKey, open_note
from broker.audit.tree import (
    AuditLeaf,
    AuditNode,
    AuditPending,
    consistency_proof,
    enqueue_missing,
    inclusion_proof,
    node_key,
    root_at,
)
from broker.settings import Settings
from tests.audit.conftest import AuditRows, Checkpointer
from tests.conftest import MakePartner, PartnerHandle

ACTOR = Actor("system", "audit-tests")


def _leaf_hashes(engine: Engine, size: int) -> list[bytes]:
    with Session(engine) as session:
        rows = session.exec(select(AuditNode.hash).where(col(AuditNode.id) < size).order_by(col(AuditNode.id))).all()
    return [bytes(h) for h in rows]


def test_every_committed_record_becomes_exactly_one_leaf(
    partner: PartnerHandle, engine: Engine, checkpoint: Checkpointer, audit: AuditRows
) -> None:
    partner.create_user("ann")
    made = checkpoint()
    with Session(engine) as session:
        leaves = session.exec(
            select(AuditLeaf).where(col(AuditLeaf.record_id).in_([r.id for r in audit(partner.id)]))
        ).all()
        assert session.exec(select(func.count()).select_from(AuditPending)).one() == 0
        count, highest = session.exec(select(func.count(), func.max(AuditLeaf.leaf_index))).one()
    assert {leaf.record_id for leaf in leaves} == {r.id for r in audit(partner.id)}
    assert all(leaf.partner_id == partner.id for leaf in leaves)
    assert count == highest + 1 == made.tree_size  # indices 0..n-1, no gap, no duplicate


def test_a_leaf_is_the_records_canonical_entry(
    partner: PartnerHandle, engine: Engine, checkpoint: Checkpointer, audit: AuditRows
) -> None:
    """RFC 9162 §2.1.1 leaf hash = SHA-256(0x00 || canonical JSON of the entry), recomputable by anyone."""
    checkpoint()
    with Session(engine) as session:
        for record in audit(partner.id):
            leaf = session.exec(select(AuditLeaf).where(AuditLeaf.record_id == record.id)).one()
            stored = session.get(AuditNode, node_key(Node(0, leaf.leaf_index)))
            assert stored is not None and bytes(stored.hash) == hash_leaf(canonical_json(record_entry(record)))


def test_the_trees_tables_are_append_only(partner: PartnerHandle, engine: Engine, checkpoint: Checkpointer) -> None:
    size = checkpoint().tree_size
    for statement in (
        "UPDATE audit_leaf SET record_id = record_id WHERE leaf_index = 0",
        "DELETE FROM audit_leaf WHERE leaf_index = 0",
        "UPDATE audit_node SET hash = hash WHERE id = 0",
        "DELETE FROM audit_node WHERE id = 0",
        f"UPDATE audit_checkpoint SET note = 'forged' WHERE tree_size = {size}",
        f"DELETE FROM audit_checkpoint WHERE tree_size = {size}",
    ):
        with engine.connect() as connection, pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text(statement))
            connection.commit()


def test_stored_proofs_equal_proofs_recomputed_from_every_leaf(
    partner: PartnerHandle, engine: Engine, checkpoint: Checkpointer
) -> None:
    made = checkpoint()
    size = made.tree_size
    leaves = _leaf_hashes(engine, size)
    assert root_hash(leaves) == made.root_hash
    sample = sorted({0, size - 1, size // 2, size // 3, max(0, size - 7)})
    with Session(engine) as session:
        assert root_at(session, size) == made.root_hash
        for index in sample:
            assert inclusion_proof(session, leaf_index=index, tree_size=size) == memory_inclusion(leaves, index)
        for first in sorted({1, size // 2, size - 1, size}):
            assert consistency_proof(session, first=first, second=size) == memory_consistency(leaves, first)


def test_checkpoints_are_signed_notes_that_extend_each_other(
    make_partner: MakePartner, engine: Engine, checkpoint: Checkpointer, log_key: VerifierKey
) -> None:
    first = checkpoint()
    make_partner()
    second = checkpoint()
    assert second.tree_size > first.tree_size
    parsed = Checkpoint.parse(open_note(second.note, log_key))
    assert (parsed.tree_size, parsed.root_hash) == (second.tree_size, second.root_hash)
    assert parsed.timestamp == int(second.signed_at.timestamp())
    assert second.verifier_key == log_key.encode()


def test_a_checkpoint_is_due_after_max_records_or_the_interval(
    engine: Engine, settings: Settings, checkpoint: Checkpointer
) -> None:
    checkpoint()
    patient = settings.model_copy(
        update={"audit_checkpoint_interval_seconds": 3600.0, "audit_checkpoint_max_records": 5}
    )
    with Session(engine, expire_on_commit=False) as session:
        for _ in range(4):
            append_audit(session, actor=ACTOR, action="test.cadence", partner_id=None)
        session.commit()
        assert make_checkpoint(session, patient, wait=True) is None  # 4 < 5 records, interval not up
        append_audit(session, actor=ACTOR, action="test.cadence", partner_id=None)
        session.commit()
        made = make_checkpoint(session, patient, wait=True)
        assert made is not None
        append_audit(session, actor=ACTOR, action="test.cadence", partner_id=None)
        session.commit()
        hurried = settings.model_copy(update={"audit_checkpoint_interval_seconds": 1.0})
        time.sleep(2.1)  # signed_at has whole seconds
        later = make_checkpoint(session, hurried, wait=True)
        assert later is not None and later.tree_size == made.tree_size + 1
        assert make_checkpoint(session, hurried, wait=True) is None  # the tree did not grow


def test_a_record_committed_late_gets_a_later_leaf(engine: Engine, database_url: str, checkpoint: Checkpointer) -> None:
    """PostgreSQL assigns ids before commit: a lower id committed after a checkpoint is appended after it."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: records commit in id order there")
    with Session(engine) as slow, Session(engine) as fast:
        early = append_audit(slow, actor=ACTOR, action="test.slow", partner_id=None)
        late = append_audit(fast, actor=ACTOR, action="test.fast", partner_id=None)
        fast.commit()
        assert early.id < late.id
        first = checkpoint()
        slow.commit()
    second = checkpoint()
    with Session(engine) as session:
        index = {
            leaf.record_id: leaf.leaf_index
            for leaf in session.exec(select(AuditLeaf).where(col(AuditLeaf.record_id).in_([early.id, late.id])))
        }
        assert index[late.id] < first.tree_size <= index[early.id] < second.tree_size
        proof = consistency_proof(session, first=first.tree_size, second=second.tree_size)
    verify_consistency(first.tree_size, second.tree_size, proof, first.root_hash, second.root_hash)


def _disable_append_only(engine: Engine, table: str) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            trigger = "audit_record_append_only" if table == "audit_record" else f"{table}_append_only"
            connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
        else:
            connection.execute(text(f"DROP TRIGGER {table}_no_update"))


def test_the_log_refuses_to_sign_a_rewritten_history(
    scratch: tuple[Engine, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    engine, settings = scratch
    with Session(engine, expire_on_commit=False) as session:
        for n in range(5):
            append_audit(session, actor=ACTOR, action="test.history", partner_id=None, detail={"n": n})
        session.commit()
        first = make_checkpoint(session, settings, force=True, wait=True)
        assert first is not None and first.tree_size == 5
    _disable_append_only(engine, "audit_node")
    with engine.begin() as connection:  # someone with the database rewrites leaf 2 and the subtrees above it
        hashes = [bytes(h) for (h,) in connection.execute(text("SELECT hash FROM audit_node WHERE id < 5 ORDER BY id"))]
        hashes[2] = hash_leaf(b"forged")
        rewritten = {(0, 2): hashes[2], (1, 1): hash_children(hashes[2], hashes[3]), (2, 0): root_hash(hashes[:4])}
        for (level, position), value in rewritten.items():
            connection.execute(
                text("UPDATE audit_node SET hash = :h WHERE id = :id"),
                {"h": value, "id": node_key(Node(level, position))},
            )
    with Session(engine, expire_on_commit=False) as session:
        append_audit(session, actor=ACTOR, action="test.history", partner_id=None)
        session.commit()
        with pytest.raises(RootMismatch, match="does not extend checkpoint 5"):
            make_checkpoint(session, settings, force=True, wait=True)
    eager = settings.model_copy(update={"audit_checkpoint_max_records": 1})
    with caplog.at_level(logging.ERROR, logger="entente.audit"):
        assert run_checkpointer(engine, eager) is None
    assert "does not extend checkpoint 5" in caplog.text
    with Session(engine) as session:
        assert latest_checkpoint(session).tree_size == 5  # type: ignore[union-attr]


def test_a_record_altered_before_it_is_logged_stops_the_log(
    scratch: tuple[Engine, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    engine, settings = scratch
    with Session(engine) as session:
        appended = append_audit(session, actor=ACTOR, action="test.genuine", partner_id=None)
        session.commit()
    _disable_append_only(engine, "audit_record")
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_record SET action = 'test.forged' WHERE id = :id"), {"id": appended.id})
    with Session(engine) as session, pytest.raises(LeafMismatch, match=f"record {appended.id}"):
        make_checkpoint(session, settings, force=True, wait=True)
    with caplog.at_level(logging.ERROR, logger="entente.audit"):
        assert run_checkpointer(engine, settings) is None
    assert f"audit record {appended.id} no longer matches" in caplog.text


def test_a_record_dropped_from_the_queue_is_found_again(scratch: tuple[Engine, Settings]) -> None:
    engine, settings = scratch
    with Session(engine) as session:
        dropped = append_audit(session, actor=ACTOR, action="test.dropped", partner_id=None)
        session.commit()
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_pending WHERE record_id = :id"), {"id": dropped.id})
    with Session(engine, expire_on_commit=False) as session:
        assert make_checkpoint(session, settings, force=True, wait=True) is None  # nothing queued: nothing signed
        assert enqueue_missing(session) == 1
        session.commit()
        made = make_checkpoint(session, settings, force=True, wait=True)
        assert made is not None and made.tree_size == 1
        leaf = session.exec(select(AuditLeaf)).one()
        record = session.get(AuditRecord, dropped.id)
    assert leaf.record_id == dropped.id and record is not None
    assert base64.b64encode(made.root_hash) == base64.b64encode(hash_leaf(canonical_json(record_entry(record))))
