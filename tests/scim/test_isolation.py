"""Tenant isolation over SCIM (RFC 7644 §6 multi-tenancy): partner A using partner B's ids sees exactly
what it sees for an id that exists nowhere, on every route and method, and nothing of B changes.

"Exactly" means the same status, the same headers that matter, and the same Error body once the id in
it is replaced by a placeholder, so no response, count or 409 can serve as an existence oracle.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from broker.audit.log import AuditRecord
from broker.lifecycle.events import LifecycleEvent
from tests.conftest import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    USER_SCHEMA,
    MakePartner,
    PartnerHandle,
    assert_scim_error,
)

SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
PLACEHOLDER = "<id>"


@dataclass
class Side:
    """One partner with two users and a group holding both."""

    partner: PartnerHandle
    users: list[dict[str, Any]]
    group: dict[str, Any]

    @property
    def client(self) -> Any:
        return self.partner.client

    def snapshot(self) -> dict[str, Any]:
        """Everything this partner can read about its own objects, as it reads it."""
        client = self.partner.client
        return {
            "users": client.get("/Users", params={"count": 1000}).json(),
            "groups": client.get("/Groups", params={"count": 1000}).json(),
            "each": [client.get(f"/Users/{u['id']}").json() for u in self.users]
            + [client.get(f"/Groups/{self.group['id']}").json()],
        }


@dataclass
class Pair:
    a: Side
    b: Side
    b_only_external_id: str
    b_only_group_name: str

    def b_ids(self) -> list[str]:
        return [u["id"] for u in self.b.users] + [self.b.group["id"]]


def _side(partner: PartnerHandle, tag: str) -> Side:
    users = [
        partner.create_user(
            "alice",
            externalId=f"ext-{tag}-alice",
            displayName="Alice",
            **{ENTERPRISE_SCHEMA: {"employeeNumber": "1"}},
            schemas=[USER_SCHEMA, ENTERPRISE_SCHEMA],
        ),
        partner.create_user("bob", externalId=f"ext-{tag}-bob", displayName="Bob", active=False),
    ]
    group = partner.create_group(f"team-{tag}", [u["id"] for u in users])
    return Side(partner, users, group)


@pytest.fixture
def pair(make_partner: MakePartner) -> Pair:
    a, b = _side(make_partner(), "a"), _side(make_partner(), "b")
    return Pair(a, b, b_only_external_id="ext-b-alice", b_only_group_name="team-b")


def _missing() -> str:
    return str(uuid.uuid4())


def _shape(response: Any, ids: tuple[str, ...]) -> tuple[int, dict[str, str], Any]:
    """Status, the headers a client could read meaning into, and the body with the probed ids masked."""
    text = response.text
    for i in ids:
        text = text.replace(i, PLACEHOLDER)
    body = json.loads(text) if text else None
    headers = {k: response.headers.get(k) for k in ("content-type", "etag", "location", "www-authenticate")}
    return response.status_code, headers, body


def assert_same(foreign: Any, missing: Any, foreign_id: str, missing_id: str) -> None:
    """A's answer for B's id equals its answer for an id that exists nowhere, once the ids are masked."""
    assert _shape(foreign, (foreign_id,)) == _shape(missing, (missing_id,)), (foreign.text, missing.text)


class History:
    """B's lifecycle events and audit records, to prove that nothing A does reaches them."""

    def __init__(
        self,
        partner_id: str,
        events: Callable[[str], list[LifecycleEvent]],
        audit: Callable[[str], list[AuditRecord]],
    ) -> None:
        self.partner_id, self.events, self.audit = partner_id, events, audit
        self.before = self.read()

    def read(self) -> tuple[list[Any], list[Any]]:
        return (
            [(e.id, e.kind, e.subject_id) for e in self.events(self.partner_id)],
            [(r.id, r.action, r.resource_id) for r in self.audit(self.partner_id)],
        )

    def assert_unchanged(self) -> None:
        assert self.read() == self.before


@pytest.fixture
def b_untouched(pair: Pair, events: Any, audit: Any) -> Any:
    """After the test, B's objects, events and audit trail are exactly as they were before it."""
    snapshot = pair.b.snapshot()
    history = History(pair.b.partner.id, events, audit)
    yield
    assert pair.b.snapshot() == snapshot
    history.assert_unchanged()


def _patch_user_body() -> dict[str, Any]:
    return {
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {"op": "replace", "path": "active", "value": False},
            {"op": "replace", "path": "displayName", "value": "Taken over"},
        ],
    }


def _patch_group_body() -> dict[str, Any]:
    return {
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {"op": "remove", "path": "members"},
            {"op": "replace", "path": "displayName", "value": "Taken over"},
        ],
    }


def _put_user_body(side: Side) -> dict[str, Any]:
    return side.partner.user("intruder", active=False)


def _put_group_body() -> dict[str, Any]:
    return {"schemas": [GROUP_SCHEMA], "displayName": "Taken over", "members": []}


ROUTES: list[tuple[str, str, Callable[[Side], Any] | None]] = [
    ("GET", "Users", None),
    ("PUT", "Users", _put_user_body),
    ("PATCH", "Users", lambda side: _patch_user_body()),
    ("DELETE", "Users", None),
    ("GET", "Groups", None),
    ("PUT", "Groups", lambda side: _put_group_body()),
    ("PATCH", "Groups", lambda side: _patch_group_body()),
    ("DELETE", "Groups", None),
]
PRECONDITIONS = [
    {},
    {"If-Match": 'W/"1"'},
    {"If-Match": "*"},
    {"If-None-Match": 'W/"1"'},
    {"If-Match": 'W/"9"'},
]


@pytest.mark.parametrize(
    "headers", PRECONDITIONS, ids=["plain", "if-match-1", "if-match-any", "if-none-match", "if-match-stale"]
)
@pytest.mark.parametrize(("method", "kind", "body"), ROUTES, ids=[f"{m} {k}" for m, k, _ in ROUTES])
def test_foreign_id_answers_like_a_missing_one(
    pair: Pair,
    b_untouched: None,
    method: str,
    kind: str,
    body: Callable[[Side], Any] | None,
    headers: dict[str, str],
) -> None:
    """GET/PUT/PATCH/DELETE on B's id: 404 like a random id (never 304, 412 or 200), same Error body."""
    foreign_id = pair.b.users[0]["id"] if kind == "Users" else pair.b.group["id"]
    missing_id = _missing()
    payload = body(pair.a) if body else None
    responses = []
    for target in (foreign_id, missing_id):
        kwargs: dict[str, Any] = {"headers": headers}
        if payload is not None:
            kwargs["json"] = payload
        responses.append(pair.a.client.request(method, f"/{kind}/{target}", **kwargs))
    foreign, missing = responses
    assert_scim_error(foreign, 404)
    assert_same(foreign, missing, foreign_id, missing_id)


@pytest.mark.parametrize("prefix", ["/scim/v2", "/scim"])
def test_both_url_prefixes_isolate(pair: Pair, b_untouched: None, prefix: str) -> None:
    """/scim and /scim/v2 are the same API: B's id is missing under both."""
    client = pair.a.client
    root = str(client.base_url).removesuffix("/scim/v2")
    foreign_id, missing_id = pair.b.users[0]["id"], _missing()
    foreign = client.get(f"{root}{prefix}/Users/{foreign_id}")
    missing = client.get(f"{root}{prefix}/Users/{missing_id}")
    assert_scim_error(foreign, 404)
    assert_same(foreign, missing, foreign_id, missing_id)


def _filters(pair: Pair, kind: str) -> list[tuple[str, str]]:
    """(filter naming B's object, the same filter naming nothing) for every attribute that holds an id."""
    b_user, b_group = pair.b.users[0], pair.b.group
    missing = _missing()
    if kind == "Users":
        return [
            (f'id eq "{b_user["id"]}"', f'id eq "{missing}"'),
            (f'externalId eq "{pair.b_only_external_id}"', 'externalId eq "ext-nowhere"'),
            (f'userName eq "{b_user["userName"]}"', 'userName eq "nobody@nowhere.test"'),
            (f'emails.value eq "{b_user["userName"]}"', 'emails.value eq "nobody@nowhere.test"'),
            (f'emails[value co "{pair.b.partner.domain}"]', 'emails[value co "nowhere.test"]'),
            (f'userName ew "@{pair.b.partner.domain}"', 'userName ew "@nowhere.test"'),
            (f'groups.value eq "{b_group["id"]}"', f'groups.value eq "{missing}"'),
            (f'groups[value eq "{b_group["id"]}"]', f'groups[value eq "{missing}"]'),
            (f'groups.display eq "{pair.b_only_group_name}"', 'groups.display eq "team-nowhere"'),
            (f'id eq "{b_user["id"]}" or id eq "{pair.b.users[1]["id"]}"', f'id eq "{missing}" or id eq "x"'),
            (f'not (id ne "{b_user["id"]}")', f'not (id ne "{missing}")'),
        ]
    return [
        (f'id eq "{b_group["id"]}"', f'id eq "{missing}"'),
        (f'displayName eq "{pair.b_only_group_name}"', 'displayName eq "team-nowhere"'),
        (f'members.value eq "{b_user["id"]}"', f'members.value eq "{missing}"'),
        (f'members[value eq "{b_user["id"]}"]', f'members[value eq "{missing}"]'),
        (
            f'members[value eq "{b_user["id"]}" and type eq "User"]',
            f'members[value eq "{missing}" and type eq "User"]',
        ),
    ]


@pytest.mark.parametrize("kind", ["Users", "Groups"])
def test_filters_on_foreign_values_find_nothing(pair: Pair, b_untouched: None, kind: str) -> None:
    """Filters on id/externalId/userName/members.value/groups.value naming B's objects: totalResults 0,
    by GET, by /{kind}/.search and by the root /.search, exactly as for values that exist nowhere."""
    client = pair.a.client
    for foreign, nothing in _filters(pair, kind):
        answers = []
        for text in (foreign, nothing):
            get = client.get(f"/{kind}", params={"filter": text})
            typed = client.post(f"/{kind}/.search", json={"schemas": [SEARCH_REQUEST], "filter": text})
            root = client.post("/.search", json={"schemas": [SEARCH_REQUEST], "filter": text})
            for response in (get, typed, root):
                assert response.status_code == 200, (text, response.text)
                assert response.json()["totalResults"] == 0, (text, response.json())
            answers.append([get.json(), typed.json(), root.json()])
        assert answers[0] == answers[1], foreign


def test_counts_never_include_the_other_partner(pair: Pair, b_untouched: None) -> None:
    """Unfiltered, broad and sorted listings count and return A's objects only."""
    client = pair.a.client
    a_users = {u["id"] for u in pair.a.users}
    a_groups = {pair.a.group["id"]}
    for params in (
        {},
        {"filter": "userName pr"},
        {"filter": 'userName co "@"'},
        {"filter": "id pr"},
        {"sortBy": "userName", "sortOrder": "descending"},
        {"count": 1000, "startIndex": 1},
        {"filter": "active eq true or active eq false"},
        {"filter": 'meta.created gt "2000-01-01T00:00:00Z"'},
    ):
        body = client.get("/Users", params=params).json()
        assert body["totalResults"] == len(a_users), (params, body)
        assert {r["id"] for r in body["Resources"]} == a_users
    for params in (
        {},
        {"filter": "displayName pr"},
        {"filter": "members pr"},
        {"excludedAttributes": "members"},
    ):
        body = client.get("/Groups", params=params).json()
        assert body["totalResults"] == 1 and {r["id"] for r in body["Resources"]} == a_groups, (params, body)
    root = client.post("/.search", json={"schemas": [SEARCH_REQUEST], "count": 1000}).json()
    assert root["totalResults"] == len(a_users) + 1
    assert {r["id"] for r in root["Resources"]} == a_users | a_groups
    # A's own resources show only A's memberships, and members only A's users
    group = client.get(f"/Groups/{pair.a.group['id']}").json()
    assert {m["value"] for m in group["members"]} == a_users
    for user in pair.a.users:
        assert [g["value"] for g in client.get(f"/Users/{user['id']}").json()["groups"]] == [pair.a.group["id"]]


def _masked_error(response: Any, ids: tuple[str, ...]) -> tuple[int, Any]:
    status, _, body = _shape(response, ids)
    return status, body


@pytest.mark.parametrize("how", ["patch add", "patch replace", "patch no-path", "put", "post"])
def test_foreign_user_cannot_become_a_member(pair: Pair, b_untouched: None, how: str) -> None:
    """Adding B's user to A's group (PATCH add/replace, PUT, POST) fails exactly like a random id, and
    A's group keeps its members."""
    client = pair.a.client
    group_id = pair.a.group["id"]
    before = client.get(f"/Groups/{group_id}").json()
    answers = []
    for target in (pair.b.users[0]["id"], _missing()):
        members = [{"value": pair.a.users[0]["id"]}, {"value": target}]
        if how == "post":
            response = client.post(
                "/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "new team", "members": members}
            )
        elif how == "put":
            response = client.put(
                f"/Groups/{group_id}",
                json={"schemas": [GROUP_SCHEMA], "displayName": before["displayName"], "members": members},
            )
        else:
            operation: dict[str, Any] = {
                "patch add": {"op": "add", "path": "members", "value": members[1:]},
                "patch replace": {"op": "replace", "path": "members", "value": members},
                "patch no-path": {"op": "add", "value": {"members": members[1:]}},
            }[how]
            response = client.patch(f"/Groups/{group_id}", json={"schemas": [PATCH_SCHEMA], "Operations": [operation]})
        assert_scim_error(response, 400, "invalidValue")
        answers.append(_masked_error(response, (target,)))
    assert answers[0] == answers[1]
    assert client.get(f"/Groups/{group_id}").json() == before
    assert client.get("/Groups", params={"filter": 'displayName eq "new team"'}).json()["totalResults"] == 0


def test_removing_a_foreign_member_is_a_no_op_like_any_absent_value(pair: Pair, b_untouched: None) -> None:
    """`remove members[value eq "<B's user>"]` on A's group matches nothing, exactly like a random id."""
    client = pair.a.client
    group_id = pair.a.group["id"]
    before = client.get(f"/Groups/{group_id}").json()
    answers = []
    for target in (pair.b.users[0]["id"], _missing()):
        for operation in (
            {"op": "remove", "path": f'members[value eq "{target}"]'},
            {"op": "remove", "path": "members", "value": [{"value": target}]},
        ):
            response = client.patch(f"/Groups/{group_id}", json={"schemas": [PATCH_SCHEMA], "Operations": [operation]})
            assert response.status_code in (200, 204), response.text
            answers.append(_shape(response, (target,)))
    assert answers[:2] == answers[2:]
    assert client.get(f"/Groups/{group_id}").json() == before


def test_bulk_with_foreign_ids_answers_like_missing_ids(pair: Pair, b_untouched: None) -> None:
    """B's ids in Bulk paths, data and member values: every operation's result equals the one for
    random ids, and none succeeds."""
    b_user, b_group = pair.b.users[0]["id"], pair.b.group["id"]
    a_group = pair.a.group["id"]

    def request(user: str, group: str) -> dict[str, Any]:
        return {
            "schemas": [BULK_REQUEST],
            "Operations": [
                {"method": "GET", "path": f"/Users/{user}"},
                {"method": "PUT", "path": f"/Users/{user}", "data": pair.a.partner.user("bulk-put")},
                {"method": "PATCH", "path": f"/Users/{user}", "data": _patch_user_body()},
                {"method": "PATCH", "path": f"/Groups/{group}", "data": _patch_group_body()},
                {"method": "PUT", "path": f"/Groups/{group}", "data": _put_group_body()},
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g1",
                    "data": {
                        "schemas": [GROUP_SCHEMA],
                        "displayName": "bulk team",
                        "members": [{"value": user}],
                    },
                },
                {
                    "method": "PATCH",
                    "path": f"/Groups/{a_group}",
                    "data": {
                        "schemas": [PATCH_SCHEMA],
                        "Operations": [{"op": "add", "path": "members", "value": [{"value": user}, {"value": group}]}],
                    },
                },
                {"method": "DELETE", "path": f"/Groups/{group}", "version": 'W/"1"'},
                {"method": "DELETE", "path": f"/Users/{user}"},
            ],
        }

    foreign = pair.a.client.post("/Bulk", json=request(b_user, b_group))
    missing_user, missing_group = _missing(), _missing()
    missing = pair.a.client.post("/Bulk", json=request(missing_user, missing_group))
    assert foreign.status_code == missing.status_code == 200, foreign.text
    foreign_results = _shape(foreign, (b_user, b_group))[2]["Operations"]
    missing_results = _shape(missing, (missing_user, missing_group))[2]["Operations"]
    assert foreign_results == missing_results
    assert len(foreign_results) == 9
    assert all(int(r["status"]) >= 400 for r in foreign_results), foreign_results
    assert {m["value"] for m in pair.a.client.get(f"/Groups/{a_group}").json()["members"]} == {
        u["id"] for u in pair.a.users
    }


def test_bulk_bulkid_cannot_smuggle_a_foreign_id(pair: Pair, b_untouched: None) -> None:
    """A bulkId reference resolves only to what this request created, never to an id of B's."""
    b_user = pair.b.users[0]["id"]
    response = pair.a.client.post(
        "/Bulk",
        json={
            "schemas": [BULK_REQUEST],
            "Operations": [
                {"method": "DELETE", "path": f"/Users/bulkId:{b_user}"},
                {"method": "PATCH", "path": "/Users/bulkId:x", "data": _patch_user_body()},
            ],
        },
    )
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["Operations"]] == ["409", "409"]


def test_names_are_unique_per_partner_only(pair: Pair) -> None:
    """The same userName, externalId and group displayName may exist in both partners; a duplicate is
    409 uniqueness only within the partner that already holds it."""
    a, b = pair.a.client, pair.b.client
    login = f"shared-{uuid.uuid4().hex[:6]}"  # no '@', so no domain is involved
    body = {"schemas": [USER_SCHEMA], "userName": login, "externalId": "same-ext"}
    group = {"schemas": [GROUP_SCHEMA], "displayName": "Same Team"}
    for client in (b, a):
        assert client.post("/Users", json=body).status_code == 201
        assert client.post("/Groups", json=group).status_code == 201
    for client in (a, b):
        assert_scim_error(client.post("/Users", json={**body, "userName": login.upper()}), 409, "uniqueness")
        assert_scim_error(client.post("/Groups", json={**group, "displayName": "same team"}), 409, "uniqueness")
        assert client.get("/Users", params={"filter": f'userName eq "{login}"'}).json()["totalResults"] == 1
        assert client.get("/Users", params={"filter": 'externalId eq "same-ext"'}).json()["totalResults"] == 1


def test_renaming_onto_a_name_only_the_other_partner_holds_succeeds(pair: Pair, events: Any, audit: Any) -> None:
    """PUT and PATCH to B's group displayName and B's userName-without-domain are no 409 in A."""
    a = pair.a.client
    b_login = f"taken-{uuid.uuid4().hex[:6]}"
    assert pair.b.client.post("/Users", json={"schemas": [USER_SCHEMA], "userName": b_login}).status_code == 201
    snapshot = pair.b.snapshot()
    history = History(pair.b.partner.id, events, audit)
    user_id, group_id = pair.a.users[1]["id"], pair.a.group["id"]
    response = a.patch(
        f"/Users/{user_id}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "replace", "path": "userName", "value": b_login}],
        },
    )
    assert response.status_code == 200, response.text
    response = a.put(
        f"/Groups/{group_id}",
        json={
            "schemas": [GROUP_SCHEMA],
            "displayName": pair.b_only_group_name,
            "members": [{"value": u["id"]} for u in pair.a.users],
        },
    )
    assert response.status_code == 200, response.text
    response = a.patch(
        f"/Groups/{group_id}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "replace", "path": "displayName", "value": pair.b_only_group_name.upper()}],
        },
    )
    assert response.status_code == 200, response.text
    history.assert_unchanged()
    assert pair.b.snapshot() == snapshot


def test_a_own_trail_never_names_b_ids(pair: Pair, audit: Any, events: Any) -> None:
    """After every probe above, A's audit records and events name none of B's ids."""
    client = pair.a.client
    for b_id in pair.b_ids():
        for kind in ("Users", "Groups"):
            client.get(f"/{kind}/{b_id}")
            client.delete(f"/{kind}/{b_id}")
            client.patch(f"/{kind}/{b_id}", json=_patch_user_body())
        client.patch(
            f"/Groups/{pair.a.group['id']}",
            json={
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": b_id}]}],
            },
        )
    text = json.dumps(
        [[r.resource_id, r.detail] for r in audit(pair.a.partner.id)]
        + [[e.subject_id, e.detail] for e in events(pair.a.partner.id)]
    )
    for b_id in pair.b_ids():
        assert b_id not in text


def test_another_partners_domain_is_refused_like_an_unowned_one(pair: Pair, b_untouched: None) -> None:
    """An address in B's verified domain is refused in A exactly like one in a domain nobody verified:
    the refusal names A's domains only, so it does not reveal which partner holds a domain."""
    client = pair.a.client
    b_domain, nowhere = pair.b.partner.domain, f"nowhere-{uuid.uuid4().hex[:6]}.test"
    answers = []
    for domain in (b_domain, nowhere):
        response = client.post("/Users", json={"schemas": [USER_SCHEMA], "userName": f"carol@{domain}"})
        assert_scim_error(response, 400, "invalidValue")
        answers.append(_masked_error(response, (domain,)))
    assert answers[0] == answers[1]
    assert pair.b.partner.slug not in json.dumps(answers)


def test_foreign_manager_reference_behaves_like_a_random_one(pair: Pair, b_untouched: None) -> None:
    """A manager.value naming B's user is treated like any unknown id (RFC 7643 §4.3 does not require the
    manager to exist), and A's filters on it see A's own user only."""
    client = pair.a.client
    answers = []
    for target in (pair.b.users[0]["id"], _missing()):
        response = client.post(
            "/Users",
            json=pair.a.partner.user(
                f"report-{uuid.uuid4().hex[:6]}",
                schemas=[USER_SCHEMA, ENTERPRISE_SCHEMA],
                **{ENTERPRISE_SCHEMA: {"manager": {"value": target}}},
            ),
        )
        answers.append(response.status_code)
        if response.status_code == 201:
            found = client.get("/Users", params={"filter": f'{ENTERPRISE_SCHEMA}:manager.value eq "{target}"'})
            assert [r["id"] for r in found.json()["Resources"]] == [response.json()["id"]]
    assert answers[0] == answers[1]
