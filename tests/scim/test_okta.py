"""Okta provisioning sequences (standards §2.2, replay corpus O01-O15).

Payloads are copied from Okta's "SCIM 2.0 protocol reference"
(developer.okta.com/docs/reference/scim/scim-20/, okta/okta-developer-docs) and its Runscope test
suites (developer.okta.com/standards/SCIM/SCIMFiles/Okta-SCIM-20-*-Test.json); the App Integration
Wizard (AIW) variants, PUT for everything and groups POSTed with members, are the ones
ory/polis#3136 and bitwarden/server#2919 lost memberships on. Okta never sends DELETE for users.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.audit.log import AuditRecord
from broker.lifecycle.events import LifecycleEvent
from broker.scim.models import ScimUser, ScimValue
from broker.tenants.models import DomainPolicy
from tests.conftest import PATCH_SCHEMA, USER_SCHEMA, MakePartner, PartnerHandle, assert_scim_error
from tests.scim.replay import ReplaySession, load, unique_domain

Events = Callable[[str], list[LifecycleEvent]]
Audit = Callable[[str], list[AuditRecord]]


class Okta(ReplaySession):
    """An Okta-provisioned partner: the corpus' okta.local made unique."""

    def __init__(self, partner: PartnerHandle) -> None:
        super().__init__(partner, domain=partner.domain)
        self.domain = partner.domain

    def create(self) -> dict[str, Any]:
        return self.send("okta-O02-create").json()  # type: ignore[no-any-return]


@pytest.fixture
def okta(make_partner: MakePartner) -> Okta:
    return Okta(make_partner(domains=[unique_domain("okta")]))


def _kinds(events: Events, partner_id: str) -> list[str]:
    return [e.kind for e in events(partner_id)]


def _stored_text(engine: Engine, partner_id: str, audit: Audit) -> str:
    """Everything we keep about a partner's users: stored documents, value index, audit details."""
    with Session(engine) as session:
        users = session.exec(select(ScimUser).where(ScimUser.partner_id == partner_id)).all()
        values = session.exec(select(ScimValue).where(ScimValue.partner_id == partner_id)).all()
        kept = [u.model_dump(mode="json") for u in users] + [v.model_dump(mode="json") for v in values]
    return json.dumps([kept, [r.model_dump(mode="json") for r in audit(partner_id)]])


def _assert_list_integers(body: dict[str, Any]) -> None:
    """Okta insists these are JSON integers, not strings."""
    for key in ("totalResults", "startIndex", "itemsPerPage"):
        assert type(body[key]) is int, (key, body[key])


class TestUsers:
    def test_o01_lookup_before_and_after_create(self, okta: Okta) -> None:
        before = okta.send("okta-O01-lookup").json()
        assert before["totalResults"] == 0
        _assert_list_integers(before)
        created = okta.create()
        after = okta.send("okta-O01-lookup").json()
        _assert_list_integers(after)
        assert (after["totalResults"], after["startIndex"], after["itemsPerPage"]) == (1, 1, 1)
        assert after["Resources"][0]["id"] == created["id"]

    def test_o02_create_never_returns_or_keeps_the_password(
        self, okta: Okta, events: Events, audit: Audit, engine: Engine
    ) -> None:
        response = okta.send("okta-O02-create")
        created = response.json()
        assert response.headers["content-type"].startswith("application/scim+json")
        assert response.headers["location"] == created["meta"]["location"]
        assert "password" not in created
        assert created["externalId"] == "00ujl29u0le5T6Aj10h7"
        assert created["locale"] == "en-US"
        assert "groups" not in created  # readOnly `groups: []` ignored; no memberships yet
        assert "password" not in okta.user(created["id"])
        assert "1mz050nq" not in okta.client.get("/Users").text
        stored = _stored_text(engine, okta.partner.id, audit)
        assert "00ujl29u0le5T6Aj10h7" in stored  # the search does look at the stored user
        assert "1mz050nq" not in stored
        assert _kinds(events, okta.partner.id) == ["joined"]

    def test_o02_duplicate_create_is_409_uniqueness(self, okta: Okta, events: Events) -> None:
        okta.create()
        body = load("okta-O02-create", domain=okta.domain)["body"]
        assert_scim_error(okta.client.post("/Users", json=body), 409, "uniqueness")
        shouted = {**body, "userName": body["userName"].upper()}  # N12: differs only by case
        assert_scim_error(okta.client.post("/Users", json=shouted), 409, "uniqueness")
        assert okta.send("okta-O01-lookup").json()["totalResults"] == 1
        assert _kinds(events, okta.partner.id) == ["joined"]

    def test_o02_outside_the_verified_domain(self, make_partner: MakePartner, audit: Audit) -> None:
        """The literal okta.local: refused for an enforcing partner, accepted and audited for warn-only."""
        enforcing = make_partner()
        response = send_status(enforcing, 400)
        assert_scim_error(response, 400, "invalidValue")
        warn = make_partner(domain_policy=DomainPolicy.WARN)
        created = send_status(warn, 201).json()
        assert created["userName"] == "test.user@okta.local"
        record = [r for r in audit(warn.id) if r.action == "scim.user.created"][0]
        assert any("okta.local" in w for w in record.detail["domain_warnings"])

    def test_o03_get_then_put_replaces_and_ignores_readonly(self, okta: Okta, events: Events) -> None:
        created = okta.create()
        group = okta.partner.create_group("Okta pushed", members=[created["id"]])
        response = okta.send("okta-O03-put_update", uid=created["id"])
        expected_name = {"givenName": "Another", "middleName": "Excited", "familyName": "User"}
        assert response.json()["name"] == expected_name
        got = okta.user(created["id"])
        assert got["name"]["middleName"] == "Excited"
        assert [g["value"] for g in got["groups"]] == [group["id"]]  # `groups: []` is readOnly: ignored
        assert got["meta"]["created"] == created["meta"]["created"]  # `meta` is readOnly: ignored
        assert got["meta"]["version"] != created["meta"]["version"]
        assert got["emails"][0]["display"] == f"test.user@{okta.domain}"
        for cleared in ("displayName", "locale", "externalId"):  # PUT is a full replace
            assert cleared not in got
        assert "password" not in got
        assert _kinds(events, okta.partner.id) == ["joined", "group_created", "groups_changed", "updated"]

    def test_o03_put_with_another_id_is_mutability(self, okta: Okta) -> None:
        created = okta.create()
        other = okta.partner.create_user("other")
        body = load("okta-O03-put_update", uid=other["id"], domain=okta.domain)["body"]
        response = okta.client.put(f"/Users/{created['id']}", json=body)
        assert_scim_error(response, 400, "mutability")
        assert okta.user(created["id"])["name"]["givenName"] == "Test"

    def test_o04_deactivate_then_o06_reactivate(self, okta: Okta, events: Events) -> None:
        created = okta.create()
        okta.send("okta-O04-deactivate_patch", uid=created["id"])
        assert okta.user(created["id"])["active"] is False
        okta.send("okta-O06-reactivate", uid=created["id"])
        assert okta.user(created["id"])["active"] is True
        history = [(e.kind, e.detail.get("cause")) for e in events(okta.partner.id)]
        assert history == [("joined", None), ("left", "deactivated"), ("rejoined", None)]

    def test_o05_aiw_deactivates_by_put(self, okta: Okta, events: Events) -> None:
        created = okta.create()
        response = okta.send("okta-O05-deactivate_put_aiw", uid=created["id"])
        assert response.json()["active"] is False
        assert okta.user(created["id"])["active"] is False
        left = [e for e in events(okta.partner.id) if e.kind == "left"]
        assert [(e.subject_id, e.detail["cause"]) for e in left] == [(created["id"], "deactivated")]

    def test_put_without_active_never_reactivates(self, okta: Okta, events: Events) -> None:
        created = okta.create()
        okta.send("okta-O04-deactivate_patch", uid=created["id"])
        body = load("okta-O03-put_update", uid=created["id"], domain=okta.domain)["body"]
        del body["active"]
        assert okta.client.put(f"/Users/{created['id']}", json=body).status_code == 200
        assert okta.user(created["id"])["active"] is False
        assert "rejoined" not in _kinds(events, okta.partner.id)

    def test_o07_password_sync_is_accepted_and_never_kept(
        self, okta: Okta, events: Events, audit: Audit, engine: Engine
    ) -> None:
        created = okta.create()
        response = okta.send("okta-O07-password_sync", uid=created["id"])
        assert "N3w-pass" not in response.text
        got = okta.user(created["id"])
        assert "password" not in got
        assert got["meta"]["version"] == created["meta"]["version"]  # nothing we store changed
        assert "N3w-pass" not in _stored_text(engine, okta.partner.id, audit)
        assert _kinds(events, okta.partner.id) == ["joined"]


class TestGroups:
    def test_o10_group_push(self, okta: Okta, events: Events) -> None:
        created = okta.send("okta-O10-group_push").json()
        got = okta.group(created["id"])
        assert got["displayName"] == "Test SCIMv2"
        assert "members" not in got
        assert _kinds(events, okta.partner.id) == ["group_created"]

    def test_o11_rename_with_the_same_id_in_the_value(self, okta: Okta, events: Events) -> None:
        group = okta.partner.create_group("Before")
        okta.send("okta-O11-group_rename", gid=group["id"])
        got = okta.group(group["id"])
        assert (got["id"], got["displayName"]) == (group["id"], "Test SCIMv2")
        assert _kinds(events, okta.partner.id) == ["group_created", "group_updated"]

    def test_o11_rename_with_another_id_is_mutability(self, okta: Okta, events: Events) -> None:
        group = okta.partner.create_group("Before")
        other = okta.partner.create_group("Other")
        body = load("okta-O11-group_rename", gid=other["id"])["body"]
        assert_scim_error(okta.client.patch(f"/Groups/{group['id']}", json=body), 400, "mutability")
        assert okta.group(group["id"])["displayName"] == "Before"
        assert _kinds(events, okta.partner.id) == ["group_created", "group_created"]

    def test_o12_remove_and_add_in_one_patch(self, okta: Okta, events: Events) -> None:
        user = okta.create()
        leaving = okta.partner.create_user("leaving")
        group = okta.partner.create_group("Push", members=[leaving["id"]])
        okta.send("okta-O12-group_membership", gid=group["id"], uid=user["id"], uid2=leaving["id"])
        assert okta.member_ids(group["id"]) == {user["id"]}
        changed = [(e.subject_id, e.detail) for e in events(okta.partner.id) if e.kind == "groups_changed"]
        assert changed[1:] == sorted(
            [(user["id"], {"added": [group["id"]]}), (leaving["id"], {"removed": [group["id"]]})]
        )

    def test_o12_is_atomic(self, okta: Okta, events: Events) -> None:
        """The add names a user that does not exist: the remove before it must not happen either."""
        staying = okta.partner.create_user("staying")
        group = okta.partner.create_group("Push", members=[staying["id"]])
        before = len(events(okta.partner.id))
        body = load(
            "okta-O12-group_membership",
            gid=group["id"],
            uid="no-such-user",
            uid2=staying["id"],
            domain=okta.domain,
        )["body"]
        assert_scim_error(okta.client.patch(f"/Groups/{group['id']}", json=body), 400, "invalidValue")
        got = okta.group(group["id"])
        assert {m["value"] for m in got["members"]} == {staying["id"]}
        assert got["meta"]["version"] == group["meta"]["version"]
        assert len(events(okta.partner.id)) == before

    def test_o12_retry_after_the_remove_already_happened(self, okta: Okta) -> None:
        """Okta retries whole requests: removing a member who is already gone is not an error."""
        user = okta.create()
        gone = okta.partner.create_user("gone")
        group = okta.partner.create_group("Push")
        okta.send("okta-O12-group_membership", gid=group["id"], uid=user["id"], uid2=gone["id"])
        okta.send("okta-O12-group_membership", gid=group["id"], uid=user["id"], uid2=gone["id"])
        assert okta.member_ids(group["id"]) == {user["id"]}

    def test_o13_full_push_replaces_the_membership(self, okta: Okta, events: Events) -> None:
        user, user2 = okta.create(), okta.partner.create_user("two")
        dropped = okta.partner.create_user("dropped")
        group = okta.partner.create_group("Full", members=[dropped["id"], user2["id"]])
        okta.send("okta-O13-group_full_push", gid=group["id"], uid=user["id"], uid2=user2["id"])
        assert okta.member_ids(group["id"]) == {user["id"], user2["id"]}
        changed = [(e.subject_id, e.detail) for e in events(okta.partner.id) if e.kind == "groups_changed"]
        changed = changed[2:]  # the two from create_group
        assert sorted(changed) == sorted(
            [(user["id"], {"added": [group["id"]]}), (dropped["id"], {"removed": [group["id"]]})]
        )

    def test_o14_aiw_put_with_members(self, okta: Okta) -> None:
        user = okta.create()
        dropped = okta.partner.create_user("dropped")
        group = okta.partner.create_group("Before", members=[dropped["id"]])
        response = okta.send("okta-O14-group_put_aiw", gid=group["id"], uid=user["id"])
        assert response.json()["displayName"] == "SID"
        got = okta.group(group["id"])
        assert got["displayName"] == "SID"
        assert [(m["value"], m["type"]) for m in got["members"]] == [(user["id"], "User")]
        assert [g["display"] for g in okta.user(user["id"])["groups"]] == ["SID"]
        assert "groups" not in okta.user(dropped["id"])

    def test_o15_aiw_post_with_members(self, okta: Okta, events: Events) -> None:
        user = okta.create()
        created = okta.send("okta-O15-group_post_with_members_aiw", uid=user["id"]).json()
        assert okta.member_ids(created["id"]) == {user["id"]}
        assert [g["value"] for g in okta.user(user["id"])["groups"]] == [created["id"]]
        tail = [(e.kind, e.subject_id, e.detail.get("added")) for e in events(okta.partner.id)][1:]
        assert tail == [
            ("group_created", created["id"], None),
            ("groups_changed", user["id"], [created["id"]]),
        ]


class TestPaging:
    def test_runscope_first_requests(self, okta: Okta) -> None:
        for local in ("a", "b", "c"):
            okta.partner.create_user(local)
        for count in (2, 1):
            body = okta.client.get(
                "/Users",
                params={"count": count, "startIndex": 1},
                headers={"User-Agent": "Okta SCIM Client 1.0.0"},
            ).json()
            _assert_list_integers(body)
            assert (body["totalResults"], body["itemsPerPage"], len(body["Resources"])) == (3, count, count)

    def test_pages_of_100_are_disjoint_complete_and_stable(self, okta: Okta) -> None:
        operations = [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": f"u{i}",
                "data": {
                    "schemas": [USER_SCHEMA],
                    "userName": f"user{i:03d}@{okta.domain}",
                    "name": {"familyName": f"F{(i * 37) % 150:03d}"},
                },
            }
            for i in range(150)
        ]
        bulk = okta.client.post(
            "/Bulk",
            json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": operations},
        )
        assert bulk.status_code == 200
        assert {op["status"] for op in bulk.json()["Operations"]} == {"201"}

        def page(start: int) -> list[str]:
            body = okta.client.get(f"/Users?startIndex={start}&count=100").json()
            _assert_list_integers(body)
            assert body["totalResults"] == 150 and body["startIndex"] == start
            return [r["id"] for r in body["Resources"]]

        first, second = page(1), page(101)
        assert (len(first), len(second)) == (100, 50)
        assert not set(first) & set(second)
        assert len(set(first) | set(second)) == 150
        # an update between two page requests (Okta is still pushing) must not reorder the pages
        okta.client.patch(
            f"/Users/{first[0]}",
            json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": False}}]},
        )
        assert page(1) == first
        assert page(101) == second


def send_status(partner: PartnerHandle, status: int) -> Any:
    """O02 with the literal okta.local domain, as Okta sends it, expecting ``status``."""
    body = load("okta-O02-create", domain="okta.local")["body"]
    response = partner.client.post("/Users", json=body)
    assert response.status_code == status, response.text
    return response
