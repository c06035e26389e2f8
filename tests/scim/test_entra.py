"""Microsoft Entra ID provisioning sequences (standards §2.1, replay corpus E01-E24).

Payloads are copied from "Tutorial: Develop and plan provisioning for a SCIM endpoint in Microsoft
Entra ID" (learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups)
and "Known issues and resolutions with SCIM 2.0 protocol compliance"
(learn.microsoft.com/en-us/entra/identity/app-provisioning/application-provisioning-config-problem-scim-compatibility),
in both PATCH dialects: the default job (capitalised ops, ``"False"`` strings) and the
``aadOptscim062020`` flag (lower-case ops, dotted keys in a path-less replace).

Every step checks the status, the state read back with GET, and the lifecycle events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.audit.log import AuditRecord
from broker.lifecycle.events import LifecycleEvent
from tests.conftest import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    USER_SCHEMA,
    MakePartner,
    PartnerHandle,
    assert_scim_error,
)
from tests.scim.replay import ReplaySession, load, unique_domain

Events = Callable[[str], list[LifecycleEvent]]
Audit = Callable[[str], list[AuditRecord]]


class Entra(ReplaySession):
    """An Entra-provisioned partner: the corpus' testuser.com / test.microsoft.com made unique."""

    def __init__(self, partner: PartnerHandle, domain: str, domain2: str) -> None:
        super().__init__(partner, domain=domain, domain2=domain2)

    def create_e10(self) -> dict[str, Any]:
        created = self.send("entra-E10-create_user")
        return created.json()  # type: ignore[no-any-return]


@pytest.fixture
def entra(make_partner: MakePartner) -> Entra:
    domain, domain2 = unique_domain("testuser"), unique_domain("test-microsoft")
    return Entra(make_partner(domains=[domain, domain2]), domain, domain2)


def _kinds(events: Events, partner_id: str, subject_id: str | None = None) -> list[str]:
    return [e.kind for e in events(partner_id) if subject_id is None or e.subject_id == subject_id]


class TestTestConnection:
    """E01/E02: "Test Connection" queries a random user and group and expects 200 with no results."""

    def test_e01_random_user_is_an_empty_list(self, entra: Entra) -> None:
        body = entra.send("entra-E01-test_connection_user").json()
        assert body["totalResults"] == 0
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
        assert "Resources" not in body or body["Resources"] == []

    def test_e02_random_group_is_an_empty_list(self, entra: Entra) -> None:
        entra.partner.create_group("Somebody else's group")
        body = entra.send("entra-E02-test_connection_group").json()
        assert body["totalResults"] == 0

    def test_e08_schemas_list_user_enterprise_and_group(self, entra: Entra) -> None:
        body = entra.send("entra-E08-get_schemas").json()
        ids = {s["id"] for s in body["Resources"]}
        assert {USER_SCHEMA, ENTERPRISE_SCHEMA, GROUP_SCHEMA} <= ids
        assert body["totalResults"] == len(body["Resources"])


class TestUsers:
    def test_e10_create_then_e03_find_by_external_id(self, entra: Entra, events: Events) -> None:
        created = entra.create_e10()
        assert created["userName"] == f"Test_User_00aa00aa@{entra.subs['domain']}"
        assert created["active"] is True
        assert created["externalId"] == "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"
        assert created["meta"]["resourceType"] == "User"
        found = entra.send("entra-E03-get_user_by_external_id").json()
        assert found["totalResults"] == 1
        assert found["Resources"][0]["id"] == created["id"]
        assert _kinds(events, entra.partner.id) == ["joined"]

    def test_e04_dotted_value_path_matches_the_work_email_only(self, entra: Entra) -> None:
        domain = entra.subs["domain"]
        work = entra.partner.create_user("w", emails=[{"value": f"test_user@{domain}", "type": "work"}])
        entra.partner.create_user("h", emails=[{"value": f"Test_User@{domain}", "type": "home"}])
        body = entra.send("entra-E04-get_user_by_work_email_dotted").json()
        assert [r["id"] for r in body["Resources"]] == [work["id"]]

    def test_e05_unquoted_value_is_invalid_filter(self, entra: Entra) -> None:
        entra.create_e10()
        assert_scim_error(entra.send("entra-E05-unquoted_filter_value"), 400, "invalidFilter")

    def test_e11_legacy_one_op_per_attribute(self, entra: Entra, events: Events) -> None:
        user = entra.create_e10()
        entra.send("entra-E11-patch_legacy_multi", uid=user["id"])
        got = entra.user(user["id"])
        assert got["displayName"] == "Pvlo"
        work = [e["value"] for e in got["emails"] if e["type"] == "work"]
        assert work == [f"TestBcwqnm@{entra.subs['domain2']}"]
        assert got["name"]["givenName"] == "Gtfd"
        assert got["name"]["familyName"] == "Pkqf"
        assert got["externalId"] == "Eqpj"
        assert got[ENTERPRISE_SCHEMA]["employeeNumber"] == "Eqpj"
        assert ENTERPRISE_SCHEMA in got["schemas"]
        updated = [e for e in events(entra.partner.id) if e.kind == "updated"]
        assert len(updated) == 1  # six operations, one change
        assert set(updated[0].detail["attributes"]) == {
            "displayName",
            "emails",
            "name",
            "externalId",
            f"{ENTERPRISE_SCHEMA}:employeeNumber",
        }
        found = entra.client.get("/Users", params={"filter": 'externalId eq "Eqpj"'}).json()
        assert found["totalResults"] == 1

    def test_e12_flag_dialect_dotted_and_urn_keys(self, entra: Entra, events: Events) -> None:
        user = entra.create_e10()
        entra.send("entra-E12-patch_flag_dotted_keys", uid=user["id"])
        got = entra.user(user["id"])
        assert got["displayName"] == "Bjfe"
        assert got["name"]["givenName"] == "Kkom"
        assert got["name"]["familyName"] == "Unua"
        assert got["name"]["formatted"] == "givenName familyName"  # untouched
        assert got[ENTERPRISE_SCHEMA]["employeeNumber"] == "Aklq"
        assert [e["value"] for e in got["emails"]] == [f"TestMhvaes@{entra.subs['domain2']}"]
        assert got["externalId"] == "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"
        assert "name.givenName" not in got and "name.givenName" not in got.get("name", {})
        assert _kinds(events, entra.partner.id) == ["joined", "updated"]
        found = entra.client.get("/Users", params={"filter": f'{ENTERPRISE_SCHEMA}:employeeNumber eq "Aklq"'})
        assert [r["id"] for r in found.json()["Resources"]] == [user["id"]]

    @pytest.mark.parametrize("step", ["entra-E13-disable_legacy", "entra-E14-disable_flag"])
    def test_e13_e14_disable_is_a_leaver(self, entra: Entra, events: Events, step: str) -> None:
        user = entra.create_e10()
        response = entra.send(step, uid=user["id"])
        if response.status_code == 200:
            assert response.json()["active"] is False
        got = entra.user(user["id"])  # soft-deleted users are still returned [EN-T]
        assert got["active"] is False
        left = [e for e in events(entra.partner.id) if e.kind == "left"]
        assert [(e.subject_id, e.detail["cause"]) for e in left] == [(user["id"], "deactivated")]
        inactive = entra.client.get("/Users", params={"filter": "active eq false"}).json()
        assert [r["id"] for r in inactive["Resources"]] == [user["id"]]

    def test_e13_repeated_disable_is_one_leaver(self, entra: Entra, events: Events) -> None:
        """Entra retries every cycle: the second identical PATCH changes nothing and emits nothing."""
        user = entra.create_e10()
        first = entra.send("entra-E13-disable_legacy", uid=user["id"])
        second = entra.send("entra-E13-disable_legacy", uid=user["id"])
        assert second.headers["etag"] == first.headers["etag"]
        assert _kinds(events, entra.partner.id) == ["joined", "left"]

    def test_e15_add_single_valued(self, entra: Entra, events: Events) -> None:
        user = entra.create_e10()
        entra.send("entra-E15-add_single_legacy", uid=user["id"])
        assert entra.user(user["id"])["nickName"] == "Babs"
        assert events(entra.partner.id)[-1].detail == {"attributes": ["nickName"]}

    def test_e16_manager_as_plain_string(self, entra: Entra) -> None:
        user = entra.create_e10()
        manager = entra.partner.create_user("boss")
        entra.send("entra-E16-manager_string", uid=user["id"], uid2=manager["id"])
        got = entra.user(user["id"])[ENTERPRISE_SCHEMA]["manager"]
        assert got["value"] == manager["id"]
        assert got["$ref"].endswith(f"/Users/{manager['id']}")
        reports = entra.client.get(
            "/Users", params={"filter": f'{ENTERPRISE_SCHEMA}:manager.value eq "{manager["id"]}"'}
        ).json()
        assert [r["id"] for r in reports["Resources"]] == [user["id"]]

    def test_e17_username_change(self, entra: Entra, events: Events) -> None:
        user = entra.create_e10()
        entra.send("entra-E17-username_change", uid=user["id"])
        new_name = f"5b50642d@{entra.subs['domain']}"
        assert entra.user(user["id"])["userName"] == new_name
        old = entra.client.get("/Users", params={"filter": f'userName eq "{user["userName"]}"'}).json()
        new = entra.client.get("/Users", params={"filter": f'userName eq "{new_name.upper()}"'}).json()
        assert (old["totalResults"], new["totalResults"]) == (0, 1)
        assert events(entra.partner.id)[-1].detail == {"attributes": ["userName"]}

    def test_e17_username_taken_is_409_and_changes_nothing(self, entra: Entra) -> None:
        user = entra.create_e10()
        entra.partner.create_user("5b50642d")  # holds 5b50642d@<domain>
        response = entra.client.patch(
            f"/Users/{user['id']}",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Replace", "path": "userName", "value": f"5B50642D@{entra.subs['domain']}"}],
            },
        )
        assert_scim_error(response, 409, "uniqueness")
        assert entra.user(user["id"])["userName"] == user["userName"]

    def test_e07_delete_is_a_leaver_and_then_404(self, entra: Entra, events: Events) -> None:
        user = entra.create_e10()
        other = entra.partner.create_user("stays")
        group = entra.partner.create_group("Team", members=[user["id"], other["id"]])
        response = entra.send("entra-E07-delete_user", uid=user["id"])
        assert response.content == b""
        assert_scim_error(entra.client.get(f"/Users/{user['id']}"), 404)
        assert entra.member_ids(group["id"]) == {other["id"]}
        left = [e for e in events(entra.partner.id) if e.kind == "left"]
        assert [(e.subject_id, e.detail["cause"]) for e in left] == [(user["id"], "deleted")]
        assert_scim_error(entra.client.delete(f"/Users/{user['id']}"), 404)


class TestGroups:
    def test_e20_create_group_with_microsoft_schema(self, entra: Entra, events: Events, audit: Audit) -> None:
        response = entra.send("entra-E20-create_group")
        assert response.headers["location"].endswith(f"/Groups/{response.json()['id']}")
        group = entra.group(response.json()["id"])
        assert group["schemas"] == [GROUP_SCHEMA]
        assert group["displayName"] == "displayName"
        assert group["externalId"] == "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"
        assert "members" not in group
        assert [e.kind for e in events(entra.partner.id)] == ["group_created"]
        created = [r for r in audit(entra.partner.id) if r.action == "scim.group.created"]
        assert created[0].detail["ignored_schemas"] == [
            "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
        ]
        found = entra.client.get(
            "/Groups", params={"excludedAttributes": "members", "filter": 'displayName eq "displayName"'}
        ).json()
        assert [g["id"] for g in found["Resources"]] == [group["id"]]

    def test_e06_read_group_without_members(self, entra: Entra) -> None:
        user = entra.partner.create_user("m")
        group = entra.partner.create_group("Big", members=[user["id"]])
        body = entra.send("entra-E06-get_group_excluding_members", gid=group["id"]).json()
        assert "members" not in body
        assert body["id"] == group["id"] and body["displayName"] == "Big"

    def test_e21_add_member(self, entra: Entra, events: Events) -> None:
        group = entra.send("entra-E20-create_group").json()
        user = entra.create_e10()
        entra.send("entra-E21-group_add_member", gid=group["id"], uid=user["id"])
        assert entra.member_ids(group["id"]) == {user["id"]}
        assert [g["value"] for g in entra.user(user["id"])["groups"]] == [group["id"]]
        changed = [e for e in events(entra.partner.id) if e.kind == "groups_changed"]
        assert [(e.subject_id, e.detail) for e in changed] == [(user["id"], {"added": [group["id"]]})]

    def test_e21_adding_an_existing_member_changes_nothing(self, entra: Entra, events: Events) -> None:
        user = entra.create_e10()
        group = entra.partner.create_group("G", members=[user["id"]])
        before = len(events(entra.partner.id))
        entra.send("entra-E21-group_add_member", gid=group["id"], uid=user["id"])
        assert entra.member_ids(group["id"]) == {user["id"]}
        assert len(events(entra.partner.id)) == before
        assert entra.group(group["id"])["meta"]["version"] == group["meta"]["version"]

    @pytest.mark.parametrize("step", ["entra-E22-group_remove_member_legacy", "entra-E23-group_remove_member_flag"])
    def test_e22_e23_remove_only_that_member(self, entra: Entra, events: Events, step: str) -> None:
        """Regression for MicrosoftDocs/azure-docs#30826: "Entra emptied the group"."""
        leaving = entra.create_e10()
        staying = entra.partner.create_user("stays")
        group = entra.partner.create_group("Two", members=[leaving["id"], staying["id"]])
        entra.send(step, gid=group["id"], uid=leaving["id"])
        assert entra.member_ids(group["id"]) == {staying["id"]}
        changed = [e for e in events(entra.partner.id) if e.kind == "groups_changed"]
        assert [(e.subject_id, e.detail) for e in changed][-1] == (leaving["id"], {"removed": [group["id"]]})
        assert staying["id"] not in {e.subject_id for e in changed if "removed" in e.detail}
        assert "groups" not in entra.user(leaving["id"])
        assert [g["value"] for g in entra.user(staying["id"])["groups"]] == [group["id"]]

    def test_e24_rename_keeps_members(self, entra: Entra, events: Events) -> None:
        user = entra.create_e10()
        group = entra.partner.create_group("Old name", members=[user["id"]])
        entra.send("entra-E24-group_rename", gid=group["id"])
        got = entra.group(group["id"])
        assert got["displayName"] == "1879db59updatedDisplayName"
        assert {m["value"] for m in got["members"]} == {user["id"]}
        assert entra.user(user["id"])["groups"][0]["display"] == "1879db59updatedDisplayName"
        last = events(entra.partner.id)[-1]
        assert (last.kind, last.subject_id) == ("group_updated", group["id"])
        assert last.detail == {"attributes": ["displayName"]}

    def test_e24_rename_to_a_taken_name_is_409(self, entra: Entra) -> None:
        entra.partner.create_group("1879DB59updatedDisplayName")
        group = entra.partner.create_group("Old name")
        body = load("entra-E24-group_rename", gid=group["id"])["body"]
        response = entra.client.patch(f"/Groups/{group['id']}", json=body)
        assert_scim_error(response, 409, "uniqueness")
        assert entra.group(group["id"])["displayName"] == "Old name"
