"""/audit/v1: who may read what, proofs that verify, a partner's slice verified offline, cosignatures."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from broker.audit.cosign import register_partner_key
from broker.audit.log import Actor
from broker.audit.merkle import verify_consistency, verify_inclusion
from broker.audit.note import ED25519_COSIGNATURE, VerifierKey, cosign, open_note, raw_public_key, split_note
from tests.audit.conftest import OPERATOR_TOKEN, AuditRows, Checkpointer, verify_cli
from tests.conftest import MakePartner, PartnerHandle

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def _bearer(partner: PartnerHandle) -> dict[str, str]:
    return {"Authorization": f"Bearer {partner.token}"}


def _b64(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer ent_scim_x"},
    ],
    ids=["none", "basic", "unknown", "malformed scim"],
)
def test_every_endpoint_wants_a_valid_bearer(audit_api: TestClient, headers: dict[str, str]) -> None:
    for path in ("/checkpoint", "/checkpoints/1", "/proofs/consistency?first=1&second=1", "/export"):
        response = audit_api.get(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
    assert (
        audit_api.post("/cosignatures", json={"tree_size": 1, "signature_line": "x"}, headers=headers).status_code
        == 401
    )


def test_partner_reads_checkpoints_and_proofs_of_its_own_records(
    make_partner: MakePartner, audit_api: TestClient, checkpoint: Checkpointer, log_key: VerifierKey, audit: AuditRows
) -> None:
    mine, theirs = make_partner(), make_partner()
    mine.create_user("ann")
    first = checkpoint()
    mine.create_user("bob")
    second = checkpoint()

    latest = audit_api.get("/checkpoint", headers=_bearer(mine)).json()
    assert latest["tree_size"] == second.tree_size and latest["verifier_key"] == log_key.encode()
    assert open_note(latest["note"], log_key).splitlines()[1] == str(second.tree_size)
    assert base64.b64decode(latest["root_hash"]) == second.root_hash
    earlier = audit_api.get(f"/checkpoints/{first.tree_size}", headers=_bearer(mine)).json()
    assert base64.b64decode(earlier["root_hash"]) == first.root_hash
    assert audit_api.get(f"/checkpoints/{second.tree_size + 10_000}", headers=_bearer(mine)).status_code == 404

    consistency = audit_api.get(
        f"/proofs/consistency?first={first.tree_size}&second={second.tree_size}", headers=_bearer(theirs)
    ).json()
    verify_consistency(first.tree_size, second.tree_size, _b64(consistency["proof"]), first.root_hash, second.root_hash)

    export = audit_api.get("/export", headers=_bearer(mine)).text.splitlines()
    own = [json.loads(line) for line in export[1:-1]]
    assert {leaf["record_id"] for leaf in own} == {r.id for r in audit(mine.id)}
    leaf_index = own[-1]["leaf_index"]
    proof = audit_api.get(
        f"/proofs/inclusion?leaf_index={leaf_index}&tree_size={second.tree_size}", headers=_bearer(mine)
    ).json()
    verify_inclusion(
        leaf_index, second.tree_size, base64.b64decode(proof["leaf_hash"]), _b64(proof["proof"]), second.root_hash
    )
    other = audit_api.get(
        f"/proofs/inclusion?leaf_index={leaf_index}&tree_size={second.tree_size}", headers=_bearer(theirs)
    )
    assert other.status_code == 404  # not their record: not even whether it exists
    beyond = audit_api.get(
        f"/proofs/inclusion?leaf_index=0&tree_size={second.tree_size + 10_000}", headers=_bearer(mine)
    )
    assert beyond.status_code == 400
    too_far = audit_api.get(f"/export?prove_from={second.tree_size + 1}", headers=_bearer(mine))
    assert too_far.status_code == 400 and too_far.json()["error"] == "OutOfRange"


def test_only_operators_read_the_whole_log(
    partner: PartnerHandle, audit_api: TestClient, checkpoint: Checkpointer
) -> None:
    for name in ("ann", "bob", "cy"):  # three leaves to read, even on a fresh log
        partner.create_user(name)
    size = checkpoint().tree_size
    assert audit_api.get(f"/leaves?start=0&end={size}", headers=_bearer(partner)).status_code == 403
    leaves = audit_api.get(f"/leaves?start={size - 3}&end={size}", headers=OPERATOR).json()
    assert [leaf["leaf_index"] for leaf in leaves] == [size - 3, size - 2, size - 1]
    assert {"occurred_at", "partner_id", "actor", "action", "resource", "before", "after", "detail"} == set(
        leaves[0]["entry"]
    )
    assert audit_api.get("/checkpoint", headers={"Authorization": "Bearer ent_audit_wrong"}).status_code == 401


def test_a_partner_verifies_its_slice_offline(
    partner: PartnerHandle, audit_api: TestClient, checkpoint: Checkpointer, log_key: VerifierKey, tmp_path: Path
) -> None:
    held = checkpoint()  # a checkpoint the partner fetched and kept earlier
    (tmp_path / "held.note").write_text(held.note)
    partner.create_user("carol")
    partner.create_user("dave")
    latest = checkpoint()
    (tmp_path / "log.vkey").write_text(log_key.encode())
    (tmp_path / "checkpoint.note").write_text(audit_api.get("/checkpoint", headers=_bearer(partner)).json()["note"])
    slice_ = audit_api.get(f"/export?prove_from={held.tree_size}", headers=_bearer(partner))
    assert slice_.status_code == 200 and slice_.headers["content-type"].startswith("application/jsonl")
    (tmp_path / "slice.jsonl").write_text(slice_.text)
    done = verify_cli(
        tmp_path / "slice.jsonl",
        "--checkpoint",
        tmp_path / "checkpoint.note",
        "--public-key",
        tmp_path / "log.vkey",
        "--earlier",
        tmp_path / "held.note",
    )
    assert done.code == 0, done
    assert f"verified against {log_key.name} at tree size {latest.tree_size}" in done.stdout
    assert f"partner {partner.slug}'s slice" in done.stdout
    assert f"consistent with earlier checkpoints at {held.tree_size}" in done.stdout


def test_partners_cosign_checkpoints(
    partner: PartnerHandle,
    make_partner: MakePartner,
    engine: Engine,
    audit_api: TestClient,
    checkpoint: Checkpointer,
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    name = f"{partner.slug}.example/witness"
    vkey = VerifierKey(name, ED25519_COSIGNATURE, raw_public_key(key.public_key()))
    with Session(engine) as session:
        register_partner_key(session=session, slug=partner.slug, key=vkey, actor=Actor("cli", "tests"))
    made = checkpoint()
    text_, _ = split_note(made.note)
    line = cosign(text_, name, key, int(time.time())).line()
    body = {"tree_size": made.tree_size, "signature_line": line}

    stored = audit_api.post("/cosignatures", json=body, headers=_bearer(partner))
    assert stored.status_code == 201, stored.text
    assert stored.json()["key_name"] == name and stored.json()["note"].endswith(line)
    assert audit_api.post("/cosignatures", json=body, headers=_bearer(partner)).status_code == 201  # idempotent
    note = audit_api.get(f"/checkpoints/{made.tree_size}", headers=_bearer(partner)).json()["note"]
    assert note == made.note + line

    forged = cosign(text_.replace(f"\n{made.tree_size}\n", f"\n{made.tree_size + 1}\n"), name, key, int(time.time()))
    bad = audit_api.post("/cosignatures", json={**body, "signature_line": forged.line()}, headers=_bearer(partner))
    assert bad.status_code == 422 and bad.json()["error"] == "BadSignature"
    stranger = make_partner()  # a key another partner registered is not theirs to use
    assert audit_api.post("/cosignatures", json=body, headers=_bearer(stranger)).status_code == 403
    assert audit_api.post("/cosignatures", json=body, headers=OPERATOR).status_code == 403
    future = cosign(text_, name, key, int(time.time()) + 3600).line()
    assert (
        audit_api.post("/cosignatures", json={**body, "signature_line": future}, headers=_bearer(partner)).status_code
        == 422
    )

    with engine.connect() as connection, pytest.raises(DBAPIError, match="append-only"):
        connection.execute(text("DELETE FROM audit_cosignature WHERE tree_size = :s"), {"s": made.tree_size})
        connection.commit()

    # the offline verifier can demand the partner's cosignature on the checkpoint
    (tmp_path / "cp.note").write_text(note)
    (tmp_path / "partner.vkey").write_text(vkey.encode())
    (tmp_path / "full.jsonl").write_text(audit_api.get(f"/export?tree_size={made.tree_size}", headers=OPERATOR).text)
    done = verify_cli(
        tmp_path / "full.jsonl", "--checkpoint", tmp_path / "cp.note", "--cosigner-key", tmp_path / "partner.vkey"
    )
    assert done.code == 0, done
    assert f"cosigned by {name}" in done.stdout
    assert "signature was not checked" in done.stderr
    (tmp_path / "bare.note").write_text(made.note)
    missing = verify_cli(
        tmp_path / "full.jsonl", "--checkpoint", tmp_path / "bare.note", "--cosigner-key", tmp_path / "partner.vkey"
    )
    assert missing.code == 1 and f"no cosignature by {name}" in missing.stderr
