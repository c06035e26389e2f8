"""RFC 7644 §3.4.2-§3.4.3 listing and search, §3.9 attribute selection, §3.14 ETags, §4 discovery,
§3.12 errors and §8.1 media type (standards §1.1, §1.4-§1.6, §1.9-§1.11; corpus N08, N10, N11).

Sorting puts unassigned values last ascending and first descending (§3.4.2.3); pages are 1-based and
stable (§3.4.2.4); ``returned: always`` attributes survive ``excludedAttributes``; discovery says
exactly what the server does, and what it says is checked against a server built with other limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from broker.main import create_app
from broker.settings import Settings
from tests.conftest import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    USER_SCHEMA,
    MakePartner,
    PartnerHandle,
    assert_scim_error,
)
from tests.scim.replay import open_partner, send

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
SCIM_JSON = "application/scim+json"


def locals_of(body: dict[str, Any]) -> list[str]:
    return [r["userName"].split("@")[0] for r in body.get("Resources", [])]


def listing(partner: PartnerHandle, path: str = "/Users", **params: Any) -> dict[str, Any]:
    response = partner.client.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["schemas"] == [LIST]
    return body  # type: ignore[no-any-return]


class TestSorting:
    @pytest.fixture
    def family(self, partner: PartnerHandle) -> PartnerHandle:
        for local, family in (("u1", "b"), ("u2", "A"), ("u3", None), ("u4", "c")):
            partner.create_user(local, **({"name": {"familyName": family}} if family else {}))
        return partner

    def test_ascending_is_case_insensitive_with_unassigned_last(self, family: PartnerHandle) -> None:
        assert locals_of(listing(family, sortBy="name.familyName")) == ["u2", "u1", "u4", "u3"]
        assert locals_of(listing(family, sortBy="name.familyName", sortOrder="ascending")) == [
            "u2",
            "u1",
            "u4",
            "u3",
        ]

    def test_descending_puts_unassigned_first(self, family: PartnerHandle) -> None:
        assert locals_of(listing(family, sortBy="name.familyName", sortOrder="descending")) == [
            "u3",
            "u4",
            "u1",
            "u2",
        ]
        assert locals_of(listing(family, sortBy="NAME.FAMILYNAME", sortOrder="Descending")) == [
            "u3",
            "u4",
            "u1",
            "u2",
        ]

    def test_urn_qualified_sort_by(self, family: PartnerHandle) -> None:
        body = listing(family, sortBy=f"{USER_SCHEMA}:userName", sortOrder="descending")
        assert locals_of(body) == ["u4", "u3", "u2", "u1"]

    def test_multi_valued_sorts_by_the_primary_value(self, partner: PartnerHandle) -> None:
        d = partner.domain
        partner.create_user(
            "x",
            emails=[
                {"value": f"a-home@{d}", "type": "home"},
                {"value": f"z-work@{d}", "type": "work", "primary": True},
            ],
        )
        partner.create_user("y", emails=[{"value": f"m@{d}", "type": "work"}])
        partner.create_user("w", emails=None)
        assert locals_of(listing(partner, sortBy="emails")) == ["y", "x", "w"]
        assert locals_of(listing(partner, sortBy="emails.value", sortOrder="descending")) == ["w", "x", "y"]

    def test_ties_keep_a_stable_order_across_pages(self, partner: PartnerHandle) -> None:
        names = [f"t{i}" for i in range(7)]
        for local in names:
            partner.create_user(local, title="Same")
        pages = [locals_of(listing(partner, sortBy="title", startIndex=start, count=3)) for start in (1, 4, 7)]
        assert [len(p) for p in pages] == [3, 3, 1]
        assert sum(pages, []) == names == locals_of(listing(partner, sortBy="title"))

    def test_groups_sort_by_display_name(self, partner: PartnerHandle) -> None:
        for name in ("beta", "Alpha", "gamma"):
            partner.create_group(name)
        body = listing(partner, "/Groups", sortBy="displayName", sortOrder="descending")
        assert [g["displayName"] for g in body["Resources"]] == ["gamma", "beta", "Alpha"]

    @pytest.mark.parametrize("params", [{"sortBy": "nosuch"}, {"sortBy": "userName", "sortOrder": "sideways"}])
    def test_bad_sort_parameters_are_400(self, partner: PartnerHandle, params: dict[str, str]) -> None:
        assert_scim_error(partner.client.get("/Users", params=params), 400)


class TestPagination:
    @pytest.fixture
    def five(self, partner: PartnerHandle) -> PartnerHandle:
        for i in range(5):
            partner.create_user(f"p{i}")
        return partner

    @pytest.mark.parametrize(
        ("start", "count", "expected", "echoed"),
        [
            (1, 2, ["p0", "p1"], 1),
            (4, 10, ["p3", "p4"], 4),
            (0, 2, ["p0", "p1"], 1),  # startIndex < 1 is 1
            (-7, 2, ["p0", "p1"], 1),
            (6, 2, [], 6),  # beyond the end: an empty page, not an error
            (1, 0, [], 1),  # count=0: totalResults only
            (1, -3, [], 1),  # negative count is 0
        ],
    )
    def test_start_index_and_count(
        self, five: PartnerHandle, start: int, count: int, expected: list[str], echoed: int
    ) -> None:
        body = listing(five, startIndex=start, count=count)
        assert locals_of(body) == expected
        assert (body["totalResults"], body["startIndex"], body["itemsPerPage"]) == (5, echoed, len(expected))
        if not expected:
            assert "Resources" not in body
        for key in ("totalResults", "startIndex", "itemsPerPage"):
            assert type(body[key]) is int

    @pytest.mark.parametrize("params", [{"count": "ten"}, {"startIndex": "1.5"}, {"count": "true"}])
    def test_non_integers_are_400(self, five: PartnerHandle, params: dict[str, str]) -> None:
        assert_scim_error(five.client.get("/Users", params=params), 400, "invalidValue")

    def test_parameter_names_are_case_insensitive(self, five: PartnerHandle) -> None:
        body = five.client.get("/Users?STARTINDEX=2&Count=1&sortby=userName&SortOrder=descending").json()
        assert (locals_of(body), body["startIndex"]) == (["p3"], 2)


@pytest.fixture(scope="module")
def small_app(database_url: str) -> Iterator[FastAPI]:
    """The same database behind a server configured with other limits, to check discovery tells them."""
    app = create_app(
        Settings(
            database_url=database_url,
            public_base_url="http://testserver",
            database_pool_size=2,
            scim_max_results=3,
            scim_default_count=2,
            scim_bulk_max_operations=4,
            scim_bulk_max_payload_bytes=2048,
        )
    )
    yield app
    app.state.engine.dispose()


@pytest.fixture
def small(small_app: FastAPI) -> Iterator[PartnerHandle]:
    yield from open_partner(small_app, small_app.state.engine)


class TestServerLimits:
    def test_default_and_maximum_page_size(self, small: PartnerHandle) -> None:
        for i in range(5):
            small.create_user(f"s{i}")
        assert listing(small)["itemsPerPage"] == 2  # scim_default_count
        capped = listing(small, count=100)
        assert (capped["totalResults"], capped["itemsPerPage"]) == (5, 3)  # scim_max_results
        assert locals_of(listing(small, startIndex=4, count=100)) == ["s3", "s4"]
        config = small.client.get("/ServiceProviderConfig").json()
        assert config["filter"] == {"supported": True, "maxResults": 3}

    def test_announced_bulk_limits_are_the_enforced_ones(self, small: PartnerHandle) -> None:
        bulk = small.client.get("/ServiceProviderConfig").json()["bulk"]
        assert (bulk["supported"], bulk["maxOperations"], bulk["maxPayloadSize"]) == (True, 4, 2048)
        op = {"method": "DELETE", "path": "/Users/nobody"}
        request = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"]}
        assert small.client.post("/Bulk", json={**request, "Operations": [op] * 4}).status_code == 200
        assert_scim_error(small.client.post("/Bulk", json={**request, "Operations": [op] * 5}), 413, "tooMany")
        padded = {**request, "Operations": [{**op, "path": "/Users/" + "n" * 2100}]}
        assert_scim_error(small.client.post("/Bulk", json=padded), 413, "tooMany")


class TestAttributeSelection:
    @pytest.fixture
    def alice(self, partner: PartnerHandle) -> dict[str, Any]:
        return partner.create_user(
            "alice",
            title="Eng",
            name={"givenName": "Alice", "familyName": "Zed"},
            **{"schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA], ENTERPRISE_SCHEMA: {"department": "R&D"}},
        )

    def test_attributes_returns_only_those_plus_always(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        got = partner.client.get(f"/Users/{alice['id']}", params={"attributes": "userName"}).json()
        assert set(got) == {"schemas", "id", "userName"}
        listed = listing(partner, attributes="name.givenName,title")["Resources"][0]
        assert set(listed) == {"schemas", "id", "name", "title"}
        assert listed["name"] == {"givenName": "Alice"}

    def test_attributes_by_urn(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        got = partner.client.get(
            f"/Users/{alice['id']}",
            params={"attributes": f"{USER_SCHEMA}:userName,{ENTERPRISE_SCHEMA}:department"},
        ).json()
        assert got["userName"] == alice["userName"]
        assert got[ENTERPRISE_SCHEMA] == {"department": "R&D"}
        assert "title" not in got

    def test_excluded_attributes_never_drop_returned_always(
        self, partner: PartnerHandle, alice: dict[str, Any]
    ) -> None:
        got = partner.client.get(f"/Users/{alice['id']}", params={"excludedAttributes": "id,title,emails,meta"}).json()
        assert got["id"] == alice["id"]
        assert "title" not in got and "emails" not in got and "meta" not in got
        assert got["userName"] == alice["userName"]

    def test_attributes_on_write_responses(self, partner: PartnerHandle) -> None:
        response = partner.client.post("/Users?attributes=userName", json=partner.user("bob", title="Ops"))
        assert response.status_code == 201
        assert set(response.json()) == {"schemas", "id", "userName"}
        patched = partner.client.patch(
            f"/Users/{response.json()['id']}?excludedAttributes=emails",
            json={
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "replace", "path": "title", "value": "Lead"}],
            },
        )
        assert patched.json()["title"] == "Lead" and "emails" not in patched.json()

    def test_entra_excludes_members_on_group_reads(self, partner: PartnerHandle, alice: dict[str, Any]) -> None:
        group = partner.create_group("Eng", members=[alice["id"]])
        for body in (
            partner.client.get(f"/Groups/{group['id']}", params={"excludedAttributes": "members"}).json(),
            listing(partner, "/Groups", excludedAttributes="members")["Resources"][0],
        ):
            assert "members" not in body
            assert (body["id"], body["displayName"]) == (group["id"], "Eng")
        only_values = partner.client.get(f"/Groups/{group['id']}", params={"attributes": "members.value"}).json()
        assert only_values["members"] == [{"value": alice["id"]}]


class TestSearch:
    def test_r04_search_users(self, partner: PartnerHandle) -> None:
        d = partner.domain
        partner.create_user("adam", name={"familyName": "Alpha"})
        partner.create_user("amy", name={"familyName": "Omega"})
        partner.create_user("zoe", name={"familyName": "Mid"}, emails=[{"value": f"zoe@{d}", "type": "work"}])
        partner.create_user("andy", active=False, name={"familyName": "Zulu"})
        partner.create_user("bea", name={"familyName": "Beta"}, emails=[{"value": f"bea@{d}", "type": "home"}])
        body = send(partner.client, "rfc7644-3.4.3-search_R04", domain=d).json()
        assert [r["name"]["familyName"] for r in body["Resources"]] == ["Omega", "Mid", "Alpha"]
        assert all(set(r) == {"schemas", "id", "userName", "name"} for r in body["Resources"])
        assert (body["totalResults"], body["itemsPerPage"], body["startIndex"]) == (3, 3, 1)

    def test_search_groups(self, partner: PartnerHandle) -> None:
        member = partner.create_user("m")
        partner.create_group("Eng", members=[member["id"]])
        partner.create_group("Ops")
        response = partner.client.post(
            "/Groups/.search",
            json={
                "schemas": [SEARCH],
                "filter": f'members.value eq "{member["id"]}"',
                "excludedAttributes": ["members"],
            },
        )
        assert response.status_code == 200
        assert [(g["displayName"], "members" in g) for g in response.json()["Resources"]] == [("Eng", False)]

    def test_root_search_spans_users_and_groups(self, partner: PartnerHandle) -> None:
        partner.create_user("a", displayName="Xavier")
        partner.create_user("b", displayName="Yann")
        partner.create_group("Xylophone")
        partner.create_group("Zither")
        body = partner.client.post("/.search", json={"schemas": [SEARCH], "filter": 'displayName sw "X"'}).json()
        assert sorted(r["displayName"] for r in body["Resources"]) == ["Xavier", "Xylophone"]
        assert {r["meta"]["resourceType"] for r in body["Resources"]} == {"User", "Group"}
        everything = partner.client.post("/.search", json={"schemas": [SEARCH], "startIndex": 2, "count": 2}).json()
        assert (everything["totalResults"], everything["itemsPerPage"]) == (4, 2)
        assert [r["meta"]["resourceType"] for r in everything["Resources"]] == ["User", "Group"]

    def test_root_search_with_one_types_attribute(self, partner: PartnerHandle) -> None:
        """RFC 7644 §3.4.2.2: an attribute a resource type lacks is unassigned for it, not an error."""
        user = partner.create_user("alice")
        partner.create_group("Team")
        body = partner.client.post("/.search", json={"schemas": [SEARCH], "filter": 'userName sw "alice"'}).json()
        assert [r["id"] for r in body["Resources"]] == [user["id"]]
        refused = partner.client.post("/.search", json={"schemas": [SEARCH], "filter": 'titel eq "x"'})
        assert_scim_error(refused, 400, "invalidFilter")

    def test_search_request_needs_its_schema(self, partner: PartnerHandle) -> None:
        assert_scim_error(partner.client.post("/Users/.search", json={"filter": "userName pr"}), 400, "invalidSyntax")


class TestETags:
    def test_get_carries_the_version_and_honours_if_none_match(self, partner: PartnerHandle) -> None:
        user = partner.create_user("e")
        got = partner.client.get(f"/Users/{user['id']}")
        assert got.headers["etag"] == got.json()["meta"]["version"] == 'W/"1"'
        cached = partner.client.get(f"/Users/{user['id']}", headers={"If-None-Match": got.headers["etag"]})
        assert (cached.status_code, cached.content) == (304, b"")
        assert cached.headers["etag"] == 'W/"1"'
        stale = partner.client.get(f"/Users/{user['id']}", headers={"If-None-Match": 'W/"0"'})
        assert stale.status_code == 200

    @pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
    def test_stale_if_match_is_412(self, partner: PartnerHandle, method: str) -> None:
        user = partner.create_user("e")
        bodies = {
            "PUT": partner.user("e", title="x"),
            "PATCH": {
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "add", "path": "title", "value": "x"}],
            },
        }
        response = partner.client.request(
            method, f"/Users/{user['id']}", json=bodies.get(method), headers={"If-Match": 'W/"7"'}
        )
        assert_scim_error(response, 412)
        got = partner.client.get(f"/Users/{user['id']}").json()
        assert "title" not in got and got["meta"]["version"] == 'W/"1"'
        ok = partner.client.request(
            method, f"/Users/{user['id']}", json=bodies.get(method), headers={"If-Match": 'W/"1"'}
        )
        assert ok.status_code in (200, 204), ok.text

    def test_groups_have_etags_too(self, partner: PartnerHandle) -> None:
        group = partner.create_group("G")
        got = partner.client.get(f"/Groups/{group['id']}")
        assert got.headers["etag"] == 'W/"1"'
        assert partner.client.get(f"/Groups/{group['id']}", headers={"If-None-Match": '"1"'}).status_code == 304
        assert_scim_error(partner.client.delete(f"/Groups/{group['id']}", headers={"If-Match": 'W/"2"'}), 412)
        assert partner.client.delete(f"/Groups/{group['id']}", headers={"If-Match": "*"}).status_code == 204


class TestDiscovery:
    def test_service_provider_config(self, partner: PartnerHandle) -> None:
        config = partner.client.get("/ServiceProviderConfig").json()
        assert config["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
        assert config["patch"] == {"supported": True}
        assert config["sort"] == {"supported": True}
        assert config["etag"] == {"supported": True}
        assert config["changePassword"] == {"supported": False}
        assert config["bulk"]["supported"] is True and config["filter"]["supported"] is True
        scheme = config["authenticationSchemes"][0]
        assert (scheme["type"], scheme["primary"]) == ("oauthbearertoken", True)
        assert config["meta"]["location"].endswith("/scim/v2/ServiceProviderConfig")

    def test_resource_types(self, partner: PartnerHandle) -> None:
        body = partner.client.get("/ResourceTypes").json()
        assert body["schemas"] == [LIST] and body["totalResults"] == 2
        user = partner.client.get("/ResourceTypes/User").json()
        assert (user["endpoint"], user["schema"]) == ("/Users", USER_SCHEMA)
        assert user["schemaExtensions"] == [{"schema": ENTERPRISE_SCHEMA, "required": False}]
        group = partner.client.get("/ResourceTypes/Group").json()
        assert (group["endpoint"], group["schema"]) == ("/Groups", GROUP_SCHEMA)
        assert_scim_error(partner.client.get("/ResourceTypes/Device"), 404)

    def test_schemas(self, partner: PartnerHandle) -> None:
        listed = partner.client.get("/Schemas")
        assert "null" not in listed.text  # Entra reads it: no nulls, camelCase
        ids = [s["id"] for s in listed.json()["Resources"]]
        assert sorted(ids) == sorted([USER_SCHEMA, ENTERPRISE_SCHEMA, GROUP_SCHEMA])
        for urn in ids:
            assert partner.client.get(f"/Schemas/{urn}").json()["id"] == urn
        user = partner.client.get(f"/Schemas/{USER_SCHEMA}").json()
        user_name = next(a for a in user["attributes"] if a["name"] == "userName")
        assert (user_name["uniqueness"], user_name["caseExact"], user_name["required"]) == (
            "server",
            False,
            True,
        )
        assert_scim_error(partner.client.get("/Schemas/urn:example:nope"), 404)

    @pytest.mark.parametrize("path", ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas"])
    def test_filter_on_discovery_is_403(self, partner: PartnerHandle, path: str) -> None:
        assert_scim_error(partner.client.get(path, params={"filter": 'id eq "User"'}), 403)


class TestEndpointsAndErrors:
    @pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
    def test_me_is_501(self, partner: PartnerHandle, method: str) -> None:
        assert_scim_error(partner.client.request(method, "/Me"), 501)

    def test_unknown_endpoint_is_a_scim_404(self, partner: PartnerHandle) -> None:
        assert_scim_error(partner.client.get("/Devices"), 404)
        assert_scim_error(partner.client.get("/Users/no-such-id"), 404)
        assert_scim_error(partner.client.get("/Groups/no-such-id"), 404)

    def test_wrong_method_is_a_scim_405(self, partner: PartnerHandle) -> None:
        assert_scim_error(partner.client.delete("/ServiceProviderConfig"), 405)

    def test_version_prefix_is_optional(self, partner: PartnerHandle) -> None:
        user = partner.create_user("v")
        response = partner.client.get(f"http://testserver/scim/Users/{user['id']}")
        assert response.status_code == 200 and response.json()["id"] == user["id"]

    def test_post_answers_201_with_location_and_delete_204(self, partner: PartnerHandle) -> None:
        response = partner.client.post("/Users", json=partner.user("loc"))
        assert response.status_code == 201
        assert response.headers["location"] == response.json()["meta"]["location"]
        deleted = partner.client.delete(f"/Users/{response.json()['id']}")
        assert (deleted.status_code, deleted.content) == (204, b"")

    @pytest.mark.parametrize(
        "content_type", ["application/scim+json; charset=utf-8", "application/scim+json", "application/json"]
    )
    def test_request_media_types(self, partner: PartnerHandle, content_type: str) -> None:
        import json

        body = json.dumps(partner.user("ct", displayName="Zoë")).encode()
        created = partner.client.post("/Users", content=body, headers={"Content-Type": content_type})
        assert created.status_code == 201, created.text
        assert created.json()["displayName"] == "Zoë"
        patch = json.dumps({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "add", "path": "title", "value": "x"}]})
        patched = partner.client.patch(
            f"/Users/{created.json()['id']}", content=patch.encode(), headers={"Content-Type": content_type}
        )
        assert patched.status_code == 200 and patched.json()["title"] == "x"

    def test_n08_unparsable_body_is_invalid_syntax(self, partner: PartnerHandle) -> None:
        for raw in (b"{not json", b"", b"[1, 2]"):
            response = partner.client.post("/Users", content=raw, headers={"Content-Type": "application/scim+json"})
            assert_scim_error(response, 400, "invalidSyntax")

    def test_n10_another_partners_ids_are_404(self, partner: PartnerHandle, make_partner: MakePartner) -> None:
        other = make_partner()
        user, group = other.create_user("theirs"), other.create_group("Theirs")
        for method, path, body in (
            ("GET", f"/Users/{user['id']}", None),
            ("PUT", f"/Users/{user['id']}", partner.user("mine")),
            (
                "PATCH",
                f"/Users/{user['id']}",
                {
                    "schemas": [PATCH_SCHEMA],
                    "Operations": [{"op": "replace", "path": "active", "value": False}],
                },
            ),
            ("DELETE", f"/Users/{user['id']}", None),
            ("GET", f"/Groups/{group['id']}", None),
            ("DELETE", f"/Groups/{group['id']}", None),
        ):
            response = partner.client.request(method, path, json=body)
            foreign = assert_scim_error(response, 404)
            prefix, resource_id = path.rsplit("/", 1)
            absent = partner.client.request(method, f"{prefix}/{'0' * len(resource_id)}", json=body)
            missing = assert_scim_error(absent, 404)
            # the same answer as for an id that exists nowhere: no cross-partner existence oracle
            assert foreign["detail"].replace(resource_id, "?") == missing["detail"].replace("0" * 36, "?")
        assert other.client.get(f"/Users/{user['id']}").json()["active"] is True

    @pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-token", "Basic dXNlcjpwYXNz"])
    def test_n11_missing_or_bad_credentials_are_401(self, partner: PartnerHandle, header: str | None) -> None:
        headers = {"Authorization": header} if header else {}
        client = partner.client
        saved = client.headers.pop("Authorization")
        try:
            response = client.get("/Users", headers=headers)
        finally:
            client.headers["Authorization"] = saved
        assert_scim_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")

    def test_every_response_is_scim_json(self, partner: PartnerHandle) -> None:
        user = partner.create_user("m")
        c = partner.client
        responses = {
            200: c.get("/Users"),
            201: c.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "G"}),
            400: c.get("/Users", params={"filter": "bad filter"}),
            403: c.get("/Schemas", params={"filter": "x"}),
            404: c.get("/Nope"),
            405: c.put("/Schemas"),
            409: c.post("/Users", json=partner.user("m")),
            412: c.delete(f"/Users/{user['id']}", headers={"If-Match": 'W/"9"'}),
            413: c.post(
                "/Bulk",
                json={
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                    "Operations": [{"method": "DELETE", "path": "/Users/x"}] * 1001,
                },
            ),
            501: c.get("/Me"),
        }
        for status, response in responses.items():
            assert response.status_code == status, (status, response.text)
            assert response.headers["content-type"].startswith(SCIM_JSON), (status, response.headers)
        unauthenticated = c.get("/Users", headers={"Authorization": "Bearer nope"})
        assert unauthenticated.headers["content-type"].startswith(SCIM_JSON)
