"""The audit log is append-only at the database, and every accepted SCIM change leaves a record."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from broker.audit.log import Actor, AuditItem, AuditRecord, append_audits, canonical_json
from tests.conftest import PATCH_SCHEMA, PartnerHandle


def test_database_refuses_update_and_delete(partner: PartnerHandle, engine: Engine, audit) -> None:
    record = audit(partner.id)[0]
    for statement in (
        "UPDATE audit_record SET action = 'forged' WHERE id = :id",
        "DELETE FROM audit_record WHERE id = :id",
    ):
        with engine.connect() as connection, pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text(statement), {"id": record.id})
            connection.commit()
    assert audit(partner.id)[0].action == record.action


def test_each_change_is_audited_with_actor_and_digests(partner: PartnerHandle, audit) -> None:
    user = partner.create_user("carol")
    partner.client.patch(
        f"/Users/{user['id']}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "replace", "path": "displayName", "value": "Carol"}],
        },
    )
    partner.client.delete(f"/Users/{user['id']}")
    records = [r for r in audit(partner.id) if r.resource_type == "User"]
    assert [r.action for r in records] == ["scim.user.created", "scim.user.patched", "scim.user.deleted"]
    token_id = partner.token.split("_")[2]
    assert {(r.actor_kind, r.actor_id) for r in records} == {("scim_token", token_id)}
    created, patched, deleted = records
    assert created.before_sha256 is None and created.after_sha256
    assert patched.before_sha256 == created.after_sha256
    assert patched.detail["changed"] == ["displayName"]
    assert deleted.before_sha256 == patched.after_sha256 and deleted.after_sha256 is None


def test_leaf_hash_covers_the_record(partner: PartnerHandle, audit) -> None:
    """Anyone holding a record can recompute its leaf hash from its fields."""
    record = audit(partner.id)[-1]
    recomputed = hashlib.sha256(
        canonical_json(
            {
                "occurred_at": record.occurred_at.isoformat(),
                "partner_id": record.partner_id,
                "actor": [record.actor_kind, record.actor_id],
                "action": record.action,
                "resource": [record.resource_type, record.resource_id],
                "before": record.before_sha256,
                "after": record.after_sha256,
                "detail": record.detail,
            }
        )
    ).hexdigest()
    assert recomputed == record.leaf_sha256


def test_refused_change_leaves_no_record(partner: PartnerHandle, audit, events) -> None:
    before = len(audit(partner.id))
    response = partner.client.post("/Users", json=partner.user("dave", emails=[{"value": "dave@elsewhere.example"}]))
    assert response.status_code == 400
    assert len(audit(partner.id)) == before
    assert events(partner.id) == []


def test_a_batch_of_records_gets_its_ids_in_order(partner: PartnerHandle, engine: Engine) -> None:
    """``append_audits`` (a Bulk request's creations; on PostgreSQL ids drawn from the sequence first):
    each id names the record of that position, ids ascend in the order given, leaves are intact."""
    items = [AuditItem("tests.batch", partner.id, "User", f"u-{n:03d}", after={"n": n}) for n in range(120)]
    with Session(engine) as session:
        ids = append_audits(session, actor=Actor("cli", "tests"), items=items)
        session.commit()
        rows = {r.id: r for r in session.exec(select(AuditRecord).where(col(AuditRecord.id).in_(ids))).all()}
    assert ids == sorted(ids) and len(set(ids)) == len(items)
    assert [rows[i].resource_id for i in ids] == [item.resource_id for item in items]
    assert all(rows[i].leaf_sha256 and rows[i].after_sha256 for i in ids)
    with Session(engine) as session:  # the sequence moved past them: the next record gets a later id
        later = append_audits(session, actor=Actor("cli", "tests"), items=items[:1])
        session.commit()
    assert later[0] > ids[-1]
