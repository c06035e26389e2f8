"""RFC 7644 §3.5.2 PATCH (standards §1.7, corpus R02/R03, N04-N07), for Users and Group members.

Operations apply in order and atomically: when one fails, nothing of the request is kept (state,
version, audit and lifecycle events). Errors carry the RFC 7644 Table 9 scimType.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.audit.log import AuditRecord
from broker.lifecycle.events import LifecycleEvent
from tests.conftest import ENTERPRISE_SCHEMA, PATCH_SCHEMA, MakePartner, PartnerHandle, assert_scim_error
from tests.scim.replay import send, unique_domain

Events = Callable[[str], list[LifecycleEvent]]
Audit = Callable[[str], list[AuditRecord]]


def patch(partner: PartnerHandle, resource: str, *operations: dict[str, Any], **headers: str) -> Any:
    return partner.client.patch(
        resource, json={"schemas": [PATCH_SCHEMA], "Operations": list(operations)}, headers=headers
    )


def get(partner: PartnerHandle, resource: str) -> dict[str, Any]:
    response = partner.client.get(resource)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def alice(partner: PartnerHandle) -> dict[str, Any]:
    return partner.create_user(
        "alice",
        title="Engineer",
        name={"givenName": "Alice", "familyName": "Zed"},
        emails=[{"value": partner.email("alice"), "type": "work", "primary": True}],
    )


def _url(user: dict[str, Any]) -> str:
    return f"/Users/{user['id']}"


class TestAdd:
    def test_add_without_path_merges_attributes(
        self, partner: PartnerHandle, alice: dict[str, Any], events: Events
    ) -> None:
        response = patch(
            partner,
            _url(alice),
            {
                "op": "add",
                "value": {
                    "nickName": "Ali",
                    "name": {"middleName": "M"},
                    ENTERPRISE_SCHEMA: {"department": "R&D"},
                },
            },
        )
        assert response.status_code == 200, response.text
        got = get(partner, _url(alice))
        assert got["nickName"] == "Ali"
        assert got["name"] == {"givenName": "Alice", "familyName": "Zed", "middleName": "M"}
        assert got[ENTERPRISE_SCHEMA] == {"department": "R&D"}
        assert got["title"] == "Engineer"
        assert events(partner.id)[-1].detail["attributes"] == sorted(
            ["name", "nickName", f"{ENTERPRISE_SCHEMA}:department"]
        )

    def test_add_to_a_single_valued_attribute_replaces_it(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        assert patch(partner, _url(alice), {"op": "add", "path": "title", "value": "Lead"}).status_code == 200
        assert get(partner, _url(alice))["title"] == "Lead"

    def test_r03_add_to_multi_valued_appends_and_moves_primary(
        self, partner: PartnerHandle, alice: dict[str, Any]
    ) -> None:
        send(partner.client, "rfc7644-3.5.2.1-patch_add_multi_R03", uid=alice["id"], domain=partner.domain)
        emails = get(partner, _url(alice))["emails"]
        assert [e["value"] for e in emails] == [partner.email("alice"), f"b@{partner.domain}"]
        assert [e["value"] for e in emails if e.get("primary")] == [f"b@{partner.domain}"]  # one primary only

    def test_adding_an_existing_value_changes_nothing(
        self, partner: PartnerHandle, alice: dict[str, Any], events: Events
    ) -> None:
        response = patch(
            partner,
            _url(alice),
            {
                "op": "add",
                "path": "emails",
                "value": [{"value": partner.email("alice"), "type": "work", "primary": True}],
            },
        )
        assert response.status_code == 200
        got = get(partner, _url(alice))
        assert len(got["emails"]) == 1
        assert got["meta"]["version"] == alice["meta"]["version"]
        assert [e.kind for e in events(partner.id)] == ["joined"]

    def test_add_with_a_value_filter_path_sets_a_sub_attribute(
        self, partner: PartnerHandle, alice: dict[str, Any]
    ) -> None:
        response = patch(
            partner,
            _url(alice),
            {"op": "add", "path": 'emails[type eq "work"].display', "value": "Work mail"},
        )
        assert response.status_code == 200, response.text
        assert get(partner, _url(alice))["emails"][0]["display"] == "Work mail"

    def test_add_without_value_is_invalid_value(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        assert_scim_error(patch(partner, _url(alice), {"op": "add", "path": "title"}), 400, "invalidValue")


class TestReplace:
    def test_replace_without_path_keeps_what_it_does_not_name(
        self, partner: PartnerHandle, alice: dict[str, Any]
    ) -> None:
        response = patch(
            partner, _url(alice), {"op": "replace", "value": {"title": "Lead", "name": {"givenName": "Al"}}}
        )
        assert response.status_code == 200
        got = get(partner, _url(alice))
        assert got["title"] == "Lead"
        assert got["name"]["givenName"] == "Al"
        assert got["emails"] == alice["emails"]

    def test_replace_multi_valued_without_filter_replaces_all_values(
        self, partner: PartnerHandle, alice: dict[str, Any]
    ) -> None:
        patch(
            partner,
            _url(alice),
            {"op": "add", "path": "emails", "value": [{"value": f"h@{partner.domain}", "type": "home"}]},
        )
        response = patch(
            partner,
            _url(alice),
            {
                "op": "replace",
                "path": "emails",
                "value": [{"value": f"new@{partner.domain}", "type": "work"}],
            },
        )
        assert response.status_code == 200
        assert get(partner, _url(alice))["emails"] == [{"value": f"new@{partner.domain}", "type": "work"}]
        found = partner.client.get("/Users", params={"filter": f'emails.value eq "h@{partner.domain}"'}).json()
        assert found["totalResults"] == 0  # the value index follows the document

    def test_replace_a_filtered_sub_attribute(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        patch(
            partner,
            _url(alice),
            {"op": "add", "path": "emails", "value": [{"value": f"h@{partner.domain}", "type": "home"}]},
        )
        response = patch(
            partner,
            _url(alice),
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": f"w@{partner.domain}"},
        )
        assert response.status_code == 200
        emails = {e["type"]: e["value"] for e in get(partner, _url(alice))["emails"]}
        assert emails == {"work": f"w@{partner.domain}", "home": f"h@{partner.domain}"}

    def test_replace_primary_on_one_value_clears_the_others(
        self, partner: PartnerHandle, alice: dict[str, Any]
    ) -> None:
        patch(
            partner,
            _url(alice),
            {"op": "add", "path": "emails", "value": [{"value": f"h@{partner.domain}", "type": "home"}]},
        )
        response = patch(
            partner, _url(alice), {"op": "replace", "path": 'emails[type eq "home"].primary', "value": True}
        )
        assert response.status_code == 200
        primary = [e["type"] for e in get(partner, _url(alice))["emails"] if e.get("primary")]
        assert primary == ["home"]

    def test_replace_on_a_filter_matching_nothing_creates_the_value(
        self, partner: PartnerHandle, alice: dict[str, Any]
    ) -> None:
        """Entra replaces emails[type eq "home"].value on users without one and expects it created."""
        response = patch(
            partner,
            _url(alice),
            {"op": "Replace", "path": 'emails[type eq "home"].value', "value": f"h@{partner.domain}"},
        )
        assert response.status_code == 200, response.text
        emails = {e["type"]: e["value"] for e in get(partner, _url(alice))["emails"]}
        assert emails == {"work": partner.email("alice"), "home": f"h@{partner.domain}"}

    def test_replace_with_a_wrong_type_is_invalid_value(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        response = patch(partner, _url(alice), {"op": "replace", "path": "active", "value": "sometimes"})
        assert_scim_error(response, 400, "invalidValue")

    def test_replace_with_an_empty_user_name_is_invalid_value(
        self, partner: PartnerHandle, alice: dict[str, Any]
    ) -> None:
        """RFC 7643 §4.1.1: every User MUST have a non-empty userName."""
        for blank in ("", "   "):
            response = patch(partner, _url(alice), {"op": "replace", "path": "userName", "value": blank})
            assert_scim_error(response, 400, "invalidValue")
        assert get(partner, _url(alice))["userName"] == partner.email("alice")

    def test_op_and_attribute_names_are_case_insensitive(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        response = patch(
            partner,
            _url(alice),
            {"op": "REPLACE", "path": "NAME.GIVENNAME", "value": "Ally"},
            {"op": "Add", "path": "NickName", "value": "A"},
        )
        assert response.status_code == 200, response.text
        got = get(partner, _url(alice))
        assert (got["name"]["givenName"], got["nickName"]) == ("Ally", "A")


class TestRemove:
    def test_remove_an_attribute(self, partner: PartnerHandle, alice: dict[str, Any], events: Events) -> None:
        assert patch(partner, _url(alice), {"op": "remove", "path": "title"}).status_code == 200
        assert "title" not in get(partner, _url(alice))
        assert events(partner.id)[-1].detail == {"attributes": ["title"]}
        assert partner.client.get("/Users", params={"filter": "title pr"}).json()["totalResults"] == 0

    def test_remove_a_sub_attribute(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        assert patch(partner, _url(alice), {"op": "remove", "path": "name.familyName"}).status_code == 200
        assert get(partner, _url(alice))["name"] == {"givenName": "Alice"}

    def test_r02_remove_only_the_values_the_filter_selects(self, make_partner: MakePartner) -> None:
        domain, other = unique_domain("acme"), unique_domain("elsewhere")
        partner = make_partner(domains=[domain, other])
        user = partner.create_user(
            "alice",
            emails=[
                {"value": f"alice@{domain}", "type": "work", "primary": True},
                {"value": f"alice2@{domain}", "type": "work"},
                {"value": f"h@{domain}", "type": "home"},
                {"value": f"w@{other}", "type": "work"},
            ],
        )
        send(partner.client, "rfc7644-3.5.2.2-patch_remove_filtered_R02", uid=user["id"], domain=domain)
        emails = sorted(e["value"] for e in get(partner, _url(user))["emails"])
        assert emails == sorted([f"h@{domain}", f"w@{other}"])

    def test_remove_a_whole_multi_valued_attribute(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        assert patch(partner, _url(alice), {"op": "remove", "path": "emails"}).status_code == 200
        assert "emails" not in get(partner, _url(alice))
        found = partner.client.get("/Users", params={"filter": "emails pr"}).json()
        assert found["totalResults"] == 0

    def test_n05_remove_without_path_is_no_target(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        assert_scim_error(
            send(partner.client, "rfc7644-3.5.2.2-patch_remove_without_path_N05", uid=alice["id"]),
            400,
            "noTarget",
        )
        assert get(partner, _url(alice))["title"] == "Engineer"

    def test_remove_a_required_attribute_is_refused(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        response = patch(partner, _url(alice), {"op": "remove", "path": "userName"})
        assert response.status_code == 400
        assert get(partner, _url(alice))["userName"] == partner.email("alice")


class TestRefusals:
    def test_n04_unknown_op_is_invalid_value(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        response = send(partner.client, "rfc7644-3.5.2-patch_unknown_op_N04", uid=alice["id"])
        assert_scim_error(response, 400, "invalidValue")

    def test_n06_replacing_id_is_mutability(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        response = send(partner.client, "rfc7644-3.5.2-patch_replace_id_N06", uid=alice["id"])
        assert_scim_error(response, 400, "mutability")
        assert partner.client.get("/Users/a-different-id").status_code == 404

    @pytest.mark.parametrize(
        "operation",
        [
            {"op": "replace", "value": {"id": "a-different-id"}},
            {"op": "replace", "path": "meta.created", "value": "2000-01-01T00:00:00Z"},
            {"op": "add", "path": "groups", "value": [{"value": "g-1"}]},
        ],
        ids=["id-in-value", "meta.created", "groups"],
    )
    def test_read_only_attributes_are_mutability(
        self, partner: PartnerHandle, alice: dict[str, Any], operation: dict[str, Any]
    ) -> None:
        assert_scim_error(patch(partner, _url(alice), operation), 400, "mutability")
        assert get(partner, _url(alice))["meta"] == alice["meta"]

    @pytest.mark.parametrize("path", ["emails[type eq]", "bogus[", 'emails[type eq "work"', "name..givenName"])
    def test_n07_malformed_path_is_invalid_path(self, partner: PartnerHandle, alice: dict[str, Any], path: str) -> None:
        assert_scim_error(
            patch(partner, _url(alice), {"op": "replace", "path": path, "value": "x"}), 400, "invalidPath"
        )

    def test_n07_replayed(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        assert_scim_error(send(partner.client, "rfc7644-3.5.2-patch_bad_path_N07", uid=alice["id"]), 400, "invalidPath")

    @pytest.mark.parametrize(
        ("body", "scim_type"),
        [
            ({"schemas": [PATCH_SCHEMA]}, "invalidValue"),
            (
                {
                    "schemas": ["urn:example:not-a-patch"],
                    "Operations": [{"op": "add", "path": "title", "value": "x"}],
                },
                "invalidValue",
            ),
            ([{"op": "add", "path": "title", "value": "x"}], "invalidSyntax"),
        ],
        ids=["no-operations", "wrong-schema", "not-an-object"],
    )
    def test_malformed_request_bodies(
        self, partner: PartnerHandle, alice: dict[str, Any], body: Any, scim_type: str
    ) -> None:
        assert_scim_error(partner.client.patch(_url(alice), json=body), 400, scim_type)

    def test_n08_unparsable_body_is_invalid_syntax(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        response = partner.client.patch(
            _url(alice), content=b"{not json", headers={"Content-Type": "application/scim+json"}
        )
        assert_scim_error(response, 400, "invalidSyntax")

    def test_unknown_user_is_404(self, partner: PartnerHandle) -> None:
        assert_scim_error(patch(partner, "/Users/no-such-user", {"op": "add", "path": "title", "value": "x"}), 404)


class TestAtomicity:
    def test_a_failing_later_operation_keeps_nothing(
        self, partner: PartnerHandle, alice: dict[str, Any], events: Events, audit: Audit
    ) -> None:
        records, history = len(audit(partner.id)), len(events(partner.id))
        response = patch(
            partner,
            _url(alice),
            {"op": "replace", "path": "title", "value": "Changed"},
            {"op": "replace", "path": "active", "value": False},
            {"op": "replace", "path": "bogus[", "value": "x"},
        )
        assert_scim_error(response, 400, "invalidPath")
        got = get(partner, _url(alice))
        assert (got["title"], got["active"]) == ("Engineer", True)
        assert got["meta"]["version"] == alice["meta"]["version"]
        assert len(audit(partner.id)) == records
        assert len(events(partner.id)) == history  # in particular no leaver

    def test_operations_apply_in_order(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        response = patch(
            partner,
            _url(alice),
            {"op": "remove", "path": "title"},
            {"op": "add", "path": "title", "value": "Second"},
            {"op": "replace", "path": "title", "value": "Third"},
        )
        assert response.status_code == 200
        assert get(partner, _url(alice))["title"] == "Third"

    def test_version_and_etag_follow_each_change(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        response = patch(partner, _url(alice), {"op": "replace", "path": "title", "value": "Lead"})
        assert response.headers["etag"] == response.json()["meta"]["version"] == 'W/"2"'
        same = patch(partner, _url(alice), {"op": "replace", "path": "title", "value": "Lead"})
        assert same.headers["etag"] == 'W/"2"'  # a no-op is not a new version

    def test_stale_if_match_is_412_and_changes_nothing(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        patch(partner, _url(alice), {"op": "replace", "path": "title", "value": "Lead"})
        stale = patch(
            partner, _url(alice), {"op": "replace", "path": "title", "value": "Late"}, **{"If-Match": 'W/"1"'}
        )
        assert_scim_error(stale, 412)
        fresh = patch(partner, _url(alice), {"op": "replace", "path": "title", "value": "Now"}, **{"If-Match": 'W/"2"'})
        assert fresh.status_code == 200
        assert get(partner, _url(alice))["title"] == "Now"


class TestGroupMembers:
    @pytest.fixture
    def trio(self, partner: PartnerHandle) -> list[str]:
        return [partner.create_user(n)["id"] for n in ("m1", "m2", "m3")]

    def members(self, partner: PartnerHandle, group_id: str) -> list[str]:
        return sorted(m["value"] for m in get(partner, f"/Groups/{group_id}").get("members", []))

    def test_add_remove_and_replace_members(self, partner: PartnerHandle, trio: list[str], events: Events) -> None:
        m1, m2, m3 = trio
        group = partner.create_group("G", members=[m1])
        url = f"/Groups/{group['id']}"
        assert patch(partner, url, {"op": "add", "path": "members", "value": [{"value": m2}]}).status_code == 200
        assert self.members(partner, group["id"]) == sorted([m1, m2])
        assert patch(partner, url, {"op": "remove", "path": f'members[value eq "{m1}"]'}).status_code == 200
        assert self.members(partner, group["id"]) == [m2]
        assert (
            patch(
                partner, url, {"op": "replace", "path": "members", "value": [{"value": m1}, {"value": m3}]}
            ).status_code
            == 200
        )
        assert self.members(partner, group["id"]) == sorted([m1, m3])
        changes = [(e.subject_id, e.detail) for e in events(partner.id) if e.kind == "groups_changed"]
        gid = group["id"]
        assert changes == [(m1, {"added": [gid]}), (m2, {"added": [gid]}), (m1, {"removed": [gid]})] + sorted(
            [(m1, {"added": [gid]}), (m2, {"removed": [gid]}), (m3, {"added": [gid]})]
        )

    def test_remove_with_a_member_filter_on_type(self, partner: PartnerHandle, trio: list[str]) -> None:
        inner = partner.create_group("Inner")
        group = partner.create_group("Outer", members=[trio[0], inner["id"]])
        response = patch(partner, f"/Groups/{group['id']}", {"op": "remove", "path": 'members[type eq "Group"]'})
        assert response.status_code == 200
        assert self.members(partner, group["id"]) == [trio[0]]

    def test_members_in_a_path_less_value(self, partner: PartnerHandle, trio: list[str]) -> None:
        group = partner.create_group("G")
        response = patch(
            partner,
            f"/Groups/{group['id']}",
            {"op": "add", "value": {"members": [{"value": trio[1]}], "externalId": "x-1"}},
        )
        assert response.status_code == 200, response.text
        assert self.members(partner, group["id"]) == [trio[1]]
        assert get(partner, f"/Groups/{group['id']}")["externalId"] == "x-1"

    def test_remove_all_members(self, partner: PartnerHandle, trio: list[str], events: Events) -> None:
        group = partner.create_group("G", members=trio)
        assert patch(partner, f"/Groups/{group['id']}", {"op": "remove", "path": "members"}).status_code == 200
        assert self.members(partner, group["id"]) == []
        removed = {e.subject_id for e in events(partner.id) if e.kind == "groups_changed" and "removed" in e.detail}
        assert removed == set(trio)

    def test_unknown_member_is_invalid_value_and_atomic(
        self, partner: PartnerHandle, trio: list[str], other_partner_user: str
    ) -> None:
        group = partner.create_group("G", members=[trio[0]])
        for stranger in ("no-such-user", other_partner_user):  # another partner's user does not exist here
            response = patch(
                partner,
                f"/Groups/{group['id']}",
                {"op": "remove", "path": f'members[value eq "{trio[0]}"]'},
                {"op": "add", "path": "members", "value": [{"value": stranger}]},
            )
            assert_scim_error(response, 400, "invalidValue")
        assert self.members(partner, group["id"]) == [trio[0]]

    def test_a_failing_attribute_op_undoes_member_ops(self, partner: PartnerHandle, trio: list[str]) -> None:
        group = partner.create_group("G", members=[trio[0]])
        response = patch(
            partner,
            f"/Groups/{group['id']}",
            {"op": "add", "path": "members", "value": [{"value": trio[1]}]},
            {"op": "replace", "path": "displayName", "value": "Renamed"},
            {"op": "replace", "path": "id", "value": "other"},
        )
        assert_scim_error(response, 400, "mutability")
        got = get(partner, f"/Groups/{group['id']}")
        assert (got["displayName"], got["meta"]["version"]) == ("G", group["meta"]["version"])
        assert self.members(partner, group["id"]) == [trio[0]]

    @pytest.mark.parametrize("suffix", [".value", ".display", ".type", ".$ref"])
    def test_member_sub_attributes_are_immutable(self, partner: PartnerHandle, trio: list[str], suffix: str) -> None:
        """RFC 7643 §4.2: members.value/$ref/type are immutable (display is computed by us)."""
        group = partner.create_group("G", members=[trio[0]])
        response = patch(
            partner,
            f"/Groups/{group['id']}",
            {"op": "replace", "path": f'members[value eq "{trio[0]}"]{suffix}', "value": trio[1]},
        )
        assert_scim_error(response, 400, "mutability")
        assert self.members(partner, group["id"]) == [trio[0]]

    def test_add_with_a_member_filter_is_invalid_path(self, partner: PartnerHandle, trio: list[str]) -> None:
        group = partner.create_group("G")
        response = patch(
            partner,
            f"/Groups/{group['id']}",
            {"op": "add", "path": f'members[value eq "{trio[0]}"]', "value": [{"value": trio[0]}]},
        )
        assert_scim_error(response, 400, "invalidPath")

    def test_a_group_cannot_contain_itself(self, partner: PartnerHandle) -> None:
        group = partner.create_group("G")
        response = patch(
            partner,
            f"/Groups/{group['id']}",
            {"op": "add", "path": "members", "value": [{"value": group["id"]}]},
        )
        assert_scim_error(response, 400, "invalidValue")

    def test_empty_display_name_is_invalid_value(self, partner: PartnerHandle) -> None:
        group = partner.create_group("G")
        response = patch(partner, f"/Groups/{group['id']}", {"op": "replace", "path": "displayName", "value": ""})
        assert_scim_error(response, 400, "invalidValue")
        assert get(partner, f"/Groups/{group['id']}")["displayName"] == "G"


@pytest.fixture
def other_partner_user(make_partner: MakePartner) -> str:
    return make_partner().create_user("stranger")["id"]  # type: ignore[no-any-return]
