"""OneLogin "SCIM v2 Enterprise" sequences (standards §2.3, replay corpus L01-L03).

Traffic as recorded in goauthentik/authentik#11249: a ``+``-encoded lookup with a trailing ``&``, a
``PUT /Users/{id}?`` (trailing ``?``) whose editable JSON template carries the pre-RFC URNs
``urn:scim:schemas:core:2.0`` / ``urn:scim:schemas:extension:enterprise:2.0``, and group membership
by PATCH. PagerDuty's OneLogin notes add that a deactivated user must stay addressable and
updatable, or reactivation fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.audit.log import AuditRecord
from broker.lifecycle.events import LifecycleEvent
from tests.conftest import ENTERPRISE_SCHEMA, PATCH_SCHEMA, USER_SCHEMA, PartnerHandle
from tests.scim.replay import load, send

Events = Callable[[str], list[LifecycleEvent]]
Audit = Callable[[str], list[AuditRecord]]


@pytest.fixture
def onelogin_user(partner: PartnerHandle) -> dict[str, Any]:
    """The user OneLogin created earlier (its userName is not an email: OneLogin's template allows that)."""
    return partner.create_user("u01", userName="onelogin-test-user01", active=True)


def test_l01_lookup_with_plus_encoding_and_trailing_ampersand(
    partner: PartnerHandle, onelogin_user: dict[str, Any]
) -> None:
    partner.create_user("someone-else")
    body = send(partner.client, "onelogin-L01-lookup").json()
    assert body["totalResults"] == 1
    assert body["Resources"][0]["id"] == onelogin_user["id"]


def test_l01_lookup_before_create_is_empty(partner: PartnerHandle) -> None:
    body = send(partner.client, "onelogin-L01-lookup").json()
    assert body["totalResults"] == 0


def test_l02_put_with_legacy_urns(
    partner: PartnerHandle, onelogin_user: dict[str, Any], events: Events, audit: Audit
) -> None:
    response = send(partner.client, "onelogin-L02-put_legacy_urns", uid=onelogin_user["id"], domain=partner.domain)
    assert response.json()["schemas"] == [USER_SCHEMA]
    got = partner.client.get(f"/Users/{onelogin_user['id']}").json()
    assert got["schemas"] == [USER_SCHEMA]
    assert got["name"] == {"familyName": "User 01", "givenName": "AAA Test"}
    assert got["emails"] == [{"value": f"u01@{partner.domain}"}]
    assert got["active"] is True  # the template has no `active`: a PUT without it keeps the state
    assert "urn:scim:schemas:core:2.0" not in str(got)
    assert events(partner.id)[-1].kind == "updated"
    replaced = [r for r in audit(partner.id) if r.action == "scim.user.replaced"]
    assert len(replaced) == 1
    assert "ignored_schemas" not in replaced[0].detail  # rewritten, not dropped


def test_l02_legacy_enterprise_extension_data_lands_under_the_rfc_urn(
    partner: PartnerHandle, onelogin_user: dict[str, Any]
) -> None:
    body = load("onelogin-L02-put_legacy_urns", uid=onelogin_user["id"], domain=partner.domain)["body"]
    body["urn:scim:schemas:extension:enterprise:2.0"] = {"department": "Sales", "manager": "m-1"}
    response = partner.client.put(f"/Users/{onelogin_user['id']}?", json=body)
    assert response.status_code == 200, response.text
    got = partner.client.get(f"/Users/{onelogin_user['id']}").json()
    assert got["schemas"] == [USER_SCHEMA, ENTERPRISE_SCHEMA]
    assert got[ENTERPRISE_SCHEMA]["department"] == "Sales"
    assert got[ENTERPRISE_SCHEMA]["manager"]["value"] == "m-1"
    query = {"filter": f'{ENTERPRISE_SCHEMA}:department eq "sales"'}
    found = partner.client.get("/Users", params=query).json()
    assert [r["id"] for r in found["Resources"]] == [onelogin_user["id"]]


def test_deactivated_user_stays_updatable_and_reactivates(
    partner: PartnerHandle, onelogin_user: dict[str, Any], events: Events
) -> None:
    user_id = onelogin_user["id"]
    off = partner.client.patch(
        f"/Users/{user_id}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]},
    )
    assert off.status_code == 200
    send(partner.client, "onelogin-L02-put_legacy_urns", uid=user_id, domain=partner.domain)
    assert partner.client.get(f"/Users/{user_id}").json()["active"] is False
    body = load("onelogin-L02-put_legacy_urns", uid=user_id, domain=partner.domain)["body"]
    on = partner.client.put(f"/Users/{user_id}?", json={**body, "active": True})
    assert on.status_code == 200 and on.json()["active"] is True
    history = [(e.kind, e.detail.get("cause")) for e in events(partner.id)]
    assert history == [("joined", None), ("left", "deactivated"), ("updated", None), ("rejoined", None)]


def test_l03_group_membership_by_patch(partner: PartnerHandle, onelogin_user: dict[str, Any], events: Events) -> None:
    group = partner.create_group("OneLogin role")
    send(partner.client, "onelogin-L03-group_add", gid=group["id"], uid=onelogin_user["id"])
    got = partner.client.get(f"/Groups/{group['id']}").json()
    members = [(m["value"], m["display"]) for m in got["members"]]
    assert members == [(onelogin_user["id"], "onelogin-test-user01")]
    last = events(partner.id)[-1]
    assert (last.kind, last.subject_id, last.detail) == (
        "groups_changed",
        onelogin_user["id"],
        {"added": [group["id"]]},
    )
