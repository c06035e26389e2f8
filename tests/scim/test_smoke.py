"""The basic user lifecycle over HTTP, on both databases."""

from tests.conftest import PATCH_SCHEMA, PartnerHandle


def test_create_read_patch_delete(partner: PartnerHandle, events) -> None:
    created = partner.create_user("alice", externalId="a-1")
    assert created["active"] is True
    user_id = created["id"]
    got = partner.client.get(f"/Users/{user_id}")
    assert got.status_code == 200
    assert got.headers["etag"] == 'W/"1"'
    patched = partner.client.patch(
        f"/Users/{user_id}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
        },
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["active"] is False
    assert partner.client.delete(f"/Users/{user_id}").status_code == 204
    assert partner.client.get(f"/Users/{user_id}").status_code == 404
    kinds = [(e.kind, e.detail.get("cause")) for e in events(partner.id)]
    assert kinds == [("joined", None), ("left", "deactivated"), ("left", "deleted")]
