"""Joiner / mover / leaver events are recorded with the change, typed, and only when something changed."""

from __future__ import annotations

from tests.conftest import PATCH_SCHEMA, USER_SCHEMA, PartnerHandle


def _patch(partner: PartnerHandle, path: str, *operations: dict) -> None:
    response = partner.client.patch(path, json={"schemas": [PATCH_SCHEMA], "Operations": list(operations)})
    assert response.status_code == 200, response.text


def test_joiner_mover_leaver_rejoiner(partner: PartnerHandle, events) -> None:
    user = partner.create_user("erin", title="Engineer")
    uid = user["id"]
    _patch(partner, f"/Users/{uid}", {"op": "replace", "path": "title", "value": "Manager"})
    _patch(partner, f"/Users/{uid}", {"op": "replace", "value": {"active": False}})
    _patch(partner, f"/Users/{uid}", {"op": "replace", "value": {"active": True}})
    got = [(e.kind, e.subject_id, e.detail) for e in events(partner.id)]
    assert got == [
        ("joined", uid, {}),
        ("updated", uid, {"attributes": ["title"]}),
        ("left", uid, {"cause": "deactivated"}),
        ("rejoined", uid, {}),
    ]
    assert all(e.audit_id is not None for e in events(partner.id))


def test_user_created_inactive_joins_on_first_activation(partner: PartnerHandle, events) -> None:
    user = partner.create_user("frank", active=False)
    assert events(partner.id) == []
    _patch(partner, f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": True})
    assert [e.kind for e in events(partner.id)] == ["joined"]


def test_no_op_writes_emit_nothing(partner: PartnerHandle, events) -> None:
    user = partner.create_user("gina", title="Analyst")
    body = {k: v for k, v in user.items() if k not in ("meta",)}
    assert partner.client.put(f"/Users/{user['id']}", json=body).status_code == 200
    _patch(partner, f"/Users/{user['id']}", {"op": "replace", "path": "title", "value": "Analyst"})
    assert [e.kind for e in events(partner.id)] == ["joined"]
    assert partner.client.get(f"/Users/{user['id']}").headers["etag"] == 'W/"1"'


def test_put_without_active_never_reactivates_a_leaver(partner: PartnerHandle, events) -> None:
    user = partner.create_user("hank")
    _patch(partner, f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False})
    response = partner.client.put(
        f"/Users/{user['id']}",
        json={"schemas": [USER_SCHEMA], "userName": user["userName"], "displayName": "Hank"},
    )
    assert response.status_code == 200
    assert response.json()["active"] is False  # the server's default for an omitted `active`: unchanged
    assert [e.kind for e in events(partner.id)] == ["joined", "left", "updated"]  # no rejoin


def test_patch_remove_active_keeps_the_effective_state(partner: PartnerHandle, events) -> None:
    user = partner.create_user("ian")
    _patch(partner, f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False})
    _patch(partner, f"/Users/{user['id']}", {"op": "remove", "path": "active"})
    assert "active" not in partner.client.get(f"/Users/{user['id']}").json()
    assert [e.kind for e in events(partner.id)] == ["joined", "left"]
    assert partner.client.get("/Users", params={"filter": "active eq false"}).json()["totalResults"] == 1


def test_group_membership_changes_are_member_events(partner: PartnerHandle, events) -> None:
    a = partner.create_user("ivy")["id"]
    b = partner.create_user("jack")["id"]
    group = partner.create_group("Engineering", members=[a])
    gid = group["id"]
    _patch(
        partner,
        f"/Groups/{gid}",
        {"op": "add", "path": "members", "value": [{"value": b}]},
        {"op": "remove", "path": f'members[value eq "{a}"]'},
    )
    assert partner.client.delete(f"/Groups/{gid}").status_code == 204
    by_change: dict[int, list] = {}
    for e in events(partner.id):
        if e.kind != "joined":
            by_change.setdefault(e.audit_id, []).append((e.kind, e.subject_id, e.detail))
    changes = [sorted(v, key=repr) for _, v in sorted(by_change.items())]
    assert changes == [
        sorted(
            [("group_created", gid, {"displayName": "Engineering"}), ("groups_changed", a, {"added": [gid]})],
            key=repr,
        ),
        sorted([("groups_changed", a, {"removed": [gid]}), ("groups_changed", b, {"added": [gid]})], key=repr),
        sorted(
            [
                ("group_deleted", gid, {"displayName": "Engineering"}),
                ("groups_changed", b, {"removed": [gid]}),
            ],
            key=repr,
        ),
    ]


def test_delete_is_a_leaver_even_when_already_inactive(partner: PartnerHandle, events) -> None:
    user = partner.create_user("kim", active=False)
    assert partner.client.delete(f"/Users/{user['id']}").status_code == 204
    assert [(e.kind, e.detail) for e in events(partner.id)] == [("left", {"cause": "deleted", "was_active": False})]
