"""The audit log is append-only at the database, and every accepted SCIM change leaves a record."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from broker.audit.log import canonical_json
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
