"""RFC 7644 §3.7 Bulk (standards §1.8, corpus R01 and N09).

``bulkId`` references resolve in data and in paths, forward ones included (§3.7.2); circular ones
the server cannot order are refused with 409 (§3.7.1); ``failOnErrors`` stops the run (§3.7.3);
each operation's status is a string and a failure carries an RFC 7644 §3.12 Error body; the limits
the ServiceProviderConfig announces are the ones enforced (413, §3.7.4).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from broker.lifecycle.events import LifecycleEvent
from tests.conftest import (
    ERROR_SCHEMA,
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    USER_SCHEMA,
    PartnerHandle,
    assert_scim_error,
)
from tests.scim.replay import load, send

Events = Callable[[str], list[LifecycleEvent]]
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"


def bulk(partner: PartnerHandle, operations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    response = partner.client.post("/Bulk", json={"schemas": [BULK_REQUEST], "Operations": operations, **extra})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == [BULK_RESPONSE]
    for result in body["Operations"]:
        assert isinstance(result["status"], str), result  # "201", not 201
    return body  # type: ignore[no-any-return]


def new_user(partner: PartnerHandle, bulk_id: str, local: str, **data: Any) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/Users",
        "bulkId": bulk_id,
        "data": {"schemas": [USER_SCHEMA], "userName": partner.email(local), **data},
    }


def new_group(bulk_id: str, name: str, members: list[str]) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/Groups",
        "bulkId": bulk_id,
        "data": {"schemas": [GROUP_SCHEMA], "displayName": name, "members": [{"value": m} for m in members]},
    }


def _id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def _assert_error(result: dict[str, Any], status: str, scim_type: str | None = None) -> None:
    assert result["status"] == status, result
    error = result["response"]
    assert error["schemas"] == [ERROR_SCHEMA]
    assert error["status"] == status
    assert error["detail"]
    if scim_type is not None:
        assert error["scimType"] == scim_type, error


def test_r01_bulk_ids_in_data_and_path(partner: PartnerHandle, events: Events) -> None:
    response = send(partner.client, "rfc7644-3.7-bulk_R01", domain=partner.domain)
    results = response.json()["Operations"]
    assert [(r["method"], r.get("bulkId"), r["status"]) for r in results] == [
        ("POST", "qwerty", "201"),
        ("POST", "ytrewq", "201"),
        ("PATCH", None, "200"),
    ]
    alice_id, group_id = _id(results[0]["location"]), _id(results[1]["location"])
    assert results[2]["location"].endswith(f"/Users/{alice_id}")
    alice = partner.client.get(f"/Users/{alice_id}").json()
    assert alice["active"] is False
    assert alice["meta"]["version"] == results[2]["version"]
    group = partner.client.get(f"/Groups/{group_id}").json()
    assert group["displayName"] == "Tour Guides"
    assert [(m["value"], m["type"]) for m in group["members"]] == [(alice_id, "User")]
    assert [(e.kind, e.subject_id) for e in events(partner.id)] == [
        ("joined", alice_id),
        ("group_created", group_id),
        ("groups_changed", alice_id),
        ("left", alice_id),
    ]


def test_forward_references_resolve(partner: PartnerHandle) -> None:
    """The group and the PATCH come before the user they name (RFC 7644 §3.7.2)."""
    entry = load("rfc7644-3.7-bulk_R01", domain=partner.domain)["body"]
    user_op, group_op, patch_op = entry["Operations"]
    body = bulk(partner, [patch_op, group_op, user_op])
    by_method = {(r["method"], r.get("bulkId")): r for r in body["Operations"]}
    assert {r["status"] for r in body["Operations"]} == {"201", "200"}
    alice_id = _id(by_method[("POST", "qwerty")]["location"])
    group = partner.client.get(by_method[("POST", "ytrewq")]["location"].split("/scim/v2")[1]).json()
    assert [m["value"] for m in group["members"]] == [alice_id]
    assert partner.client.get(f"/Users/{alice_id}").json()["active"] is False


def test_bulk_id_in_put_and_delete_paths(partner: PartnerHandle) -> None:
    body = bulk(
        partner,
        [
            new_user(partner, "a", "ann"),
            {
                "method": "PUT",
                "path": "/Users/bulkId:a",
                "data": {"schemas": [USER_SCHEMA], "userName": partner.email("ann"), "title": "Lead"},
            },
            new_group("g", "Temp", []),
            {"method": "DELETE", "path": "/Groups/bulkId:g"},
        ],
    )
    assert [r["status"] for r in body["Operations"]] == ["201", "200", "201", "204"]
    ann = partner.client.get(body["Operations"][0]["location"].split("/scim/v2")[1]).json()
    assert ann["title"] == "Lead"
    assert partner.client.get("/Groups").json()["totalResults"] == 0


def test_circular_references_are_409_and_create_nothing(partner: PartnerHandle, events: Events) -> None:
    body = bulk(partner, [new_group("g1", "One", ["bulkId:g2"]), new_group("g2", "Two", ["bulkId:g1"])])
    for result in body["Operations"]:
        _assert_error(result, "409")
    assert partner.client.get("/Groups").json()["totalResults"] == 0
    assert events(partner.id) == []


def test_a_reference_to_no_operation_is_409(partner: PartnerHandle) -> None:
    body = bulk(
        partner,
        [
            {
                "method": "PATCH",
                "path": "/Users/bulkId:nowhere",
                "data": {
                    "schemas": [PATCH_SCHEMA],
                    "Operations": [{"op": "add", "path": "title", "value": "x"}],
                },
            },
            new_group("g", "G", ["bulkId:nowhere"]),
        ],
    )
    for result in body["Operations"]:
        _assert_error(result, "409")


def test_a_reference_to_a_failed_post_fails_too(partner: PartnerHandle) -> None:
    body = bulk(
        partner,
        [
            new_user(partner, "bad", "x", userName="x@not-our-domain.test"),
            new_group("g", "G", ["bulkId:bad"]),
        ],
    )
    _assert_error(body["Operations"][0], "400", "invalidValue")
    _assert_error(body["Operations"][1], "409")
    assert partner.client.get("/Groups").json()["totalResults"] == 0


def test_fail_on_errors_stops_the_run(partner: PartnerHandle) -> None:
    body = bulk(
        partner,
        [
            new_user(partner, "a", "dup"),
            new_user(partner, "b", "DUP"),  # 409 uniqueness: the first error
            new_user(partner, "c", "never"),
        ],
        failOnErrors=1,
    )
    assert [r["bulkId"] for r in body["Operations"]] == ["a", "b"]
    assert body["Operations"][0]["status"] == "201"
    _assert_error(body["Operations"][1], "409", "uniqueness")
    found = partner.client.get("/Users", params={"filter": f'userName eq "{partner.email("never")}"'}).json()
    assert found["totalResults"] == 0


def test_fail_on_errors_counts_errors(partner: PartnerHandle) -> None:
    body = bulk(
        partner,
        [
            new_user(partner, "a", "a", userName="a@elsewhere.test"),
            new_user(partner, "b", "b"),
            new_user(partner, "c", "c", userName="c@elsewhere.test"),
            new_user(partner, "d", "d"),
        ],
        failOnErrors=2,
    )
    assert [r["status"] for r in body["Operations"]] == ["400", "201", "400"]
    assert partner.client.get("/Users").json()["totalResults"] == 1


def test_without_fail_on_errors_every_operation_runs(partner: PartnerHandle) -> None:
    existing = partner.create_user("there")
    body = bulk(
        partner,
        [
            {"method": "DELETE", "path": "/Users/no-such-user"},
            {
                "method": "PATCH",
                "path": f"/Users/{existing['id']}",
                "data": {
                    "schemas": [PATCH_SCHEMA],
                    "Operations": [{"op": "move", "path": "title", "value": "x"}],
                },
            },
            {
                "method": "PUT",
                "path": f"/Users/{existing['id']}",
                "version": 'W/"99"',
                "data": {"schemas": [USER_SCHEMA], "userName": partner.email("there")},
            },
            {
                "method": "POST",
                "path": "/Users",
                "data": {"schemas": [USER_SCHEMA], "userName": partner.email("n")},
            },
            {"method": "GET", "path": f"/Users/{existing['id']}"},
            {"method": "POST", "path": "/Nowhere", "bulkId": "x", "data": {}},
            new_user(partner, "ok", "ok"),
        ],
    )
    results = body["Operations"]
    _assert_error(results[0], "404")
    _assert_error(results[1], "400", "invalidValue")
    _assert_error(results[2], "412")
    _assert_error(results[3], "400", "invalidValue")  # POST needs a bulkId
    _assert_error(results[4], "400")
    _assert_error(results[5], "400")
    assert results[6]["status"] == "201"
    assert partner.client.get("/Users").json()["totalResults"] == 2


def test_each_operation_is_atomic(partner: PartnerHandle) -> None:
    """A PATCH failing on its second op keeps nothing of its first, and the other operations stand."""
    user = partner.create_user("u", title="Before")
    body = bulk(
        partner,
        [
            {
                "method": "PATCH",
                "path": f"/Users/{user['id']}",
                "data": {
                    "schemas": [PATCH_SCHEMA],
                    "Operations": [
                        {"op": "replace", "path": "title", "value": "After"},
                        {"op": "replace", "path": "id", "value": "other"},
                    ],
                },
            },
            new_user(partner, "v", "v"),
        ],
    )
    _assert_error(body["Operations"][0], "400", "mutability")
    assert body["Operations"][1]["status"] == "201"
    assert partner.client.get(f"/Users/{user['id']}").json()["title"] == "Before"


def test_n09_more_than_max_operations_is_413(partner: PartnerHandle) -> None:
    config = partner.client.get("/ServiceProviderConfig").json()["bulk"]
    operations = [{"method": "DELETE", "path": f"/Users/u{i}"} for i in range(config["maxOperations"] + 1)]
    response = partner.client.post("/Bulk", json={"schemas": [BULK_REQUEST], "Operations": operations})
    assert_scim_error(response, 413, "tooMany")
    exactly = partner.client.post(
        "/Bulk", json={"schemas": [BULK_REQUEST], "Operations": operations[: config["maxOperations"]]}
    )
    assert exactly.status_code == 200
    assert {r["status"] for r in exactly.json()["Operations"]} == {"404"}


def test_oversized_body_is_413(partner: PartnerHandle) -> None:
    limit = partner.client.get("/ServiceProviderConfig").json()["bulk"]["maxPayloadSize"]
    op = new_user(partner, "big", "big", title="x" * (limit + 10))
    raw = json.dumps({"schemas": [BULK_REQUEST], "Operations": [op]}).encode()
    response = partner.client.post("/Bulk", content=raw, headers={"Content-Type": "application/scim+json"})
    assert_scim_error(response, 413, "tooMany")
    assert partner.client.get("/Users").json()["totalResults"] == 0


def test_malformed_bulk_requests(partner: PartnerHandle) -> None:
    ops = [new_user(partner, "a", "a")]
    assert_scim_error(partner.client.post("/Bulk", json={"Operations": ops}), 400, "invalidSyntax")
    assert_scim_error(partner.client.post("/Bulk", json={"schemas": [BULK_REQUEST]}), 400, "invalidSyntax")
    assert_scim_error(
        partner.client.post("/Bulk", json={"schemas": [BULK_REQUEST], "Operations": ops, "failOnErrors": 0}),
        400,
        "invalidValue",
    )
    duplicate = [new_user(partner, "a", "a"), new_user(partner, "a", "b")]
    assert_scim_error(
        partner.client.post("/Bulk", json={"schemas": [BULK_REQUEST], "Operations": duplicate}),
        400,
        "invalidValue",
    )
    assert partner.client.get("/Users").json()["totalResults"] == 0


def test_bulk_is_tenant_scoped(partner: PartnerHandle, make_partner: Callable[..., PartnerHandle]) -> None:
    other = make_partner()
    theirs = other.create_user("theirs")
    body = bulk(
        partner,
        [
            {"method": "DELETE", "path": f"/Users/{theirs['id']}"},
            new_group("g", "Mine", [theirs["id"]]),
        ],
    )
    _assert_error(body["Operations"][0], "404")
    _assert_error(body["Operations"][1], "400", "invalidValue")
    assert other.client.get(f"/Users/{theirs['id']}").status_code == 200


def test_consecutive_creations_keep_one_by_one_semantics(
    partner: PartnerHandle, events: Events, audit: Callable[[str], list[Any]]
) -> None:
    """A run of POST /Users (an IdP's initial import) is written together, yet every operation keeps its
    own outcome, in order: uniqueness against stored users and earlier operations of the request,
    validation, verified domains, column sizes, then failOnErrors counting them as they come."""
    partner.create_user("stored")
    body = bulk(
        partner,
        [
            new_user(partner, "a", "a", displayName="A"),
            new_user(partner, "stored", "STORED"),  # 409: a stored user has it
            new_user(partner, "b", "b"),
            {"method": "POST", "path": "/Users", "bulkId": "nameless", "data": {"schemas": [USER_SCHEMA]}},
            new_user(partner, "b-again", "B"),  # 409: operation "b" took it
            new_user(partner, "long", "long", displayName="x" * 600),  # 400: longer than the column
            new_user(partner, "away", "away", userName="away@elsewhere.test"),  # 400: not a verified domain
            new_user(partner, "c", "c", active=False),
            new_user(partner, "d", "d"),  # failOnErrors=5 stops the run before this one
        ],
        failOnErrors=5,
    )
    results = body["Operations"]
    assert [(r["bulkId"], r["status"]) for r in results] == [
        ("a", "201"),
        ("stored", "409"),
        ("b", "201"),
        ("nameless", "400"),
        ("b-again", "409"),
        ("long", "400"),
        ("away", "400"),
    ]
    _assert_error(results[1], "409", "uniqueness")
    _assert_error(results[6], "400", "invalidValue")
    for result in (results[0], results[2]):
        user = partner.client.get(result["location"])
        assert user.status_code == 200 and user.headers["etag"] == result["version"] == 'W/"1"'
    created = [_id(results[0]["location"]), _id(results[2]["location"])]
    assert [e.subject_id for e in events(partner.id) if e.kind == "joined"][-2:] == created
    records = [r for r in audit(partner.id) if r.action == "scim.user.created"]
    assert [r.resource_id for r in records][-2:] == created
    assert partner.client.get("/Users").json()["totalResults"] == 3


def test_consecutive_creations_without_fail_on_errors(partner: PartnerHandle) -> None:
    body = bulk(partner, [new_user(partner, f"u{i}", f"u{i % 3}") for i in range(6)])
    assert [r["status"] for r in body["Operations"]] == ["201", "201", "201", "409", "409", "409"]
    listed = partner.client.get("/Users", params={"sortBy": "userName"}).json()
    assert [u["userName"] for u in listed["Resources"]] == [partner.email(f"u{i}") for i in range(3)]


def test_consecutive_creations_that_all_fail(partner: PartnerHandle) -> None:
    body = bulk(partner, [new_user(partner, f"x{i}", f"x{i}", userName=f"x{i}@elsewhere.test") for i in range(3)])
    assert [r["status"] for r in body["Operations"]] == ["400", "400", "400"]
    assert partner.client.get("/Users").json()["totalResults"] == 0
