"""Property-based tests of the SCIM surface (RFC 7644), over HTTP against the real app, on both databases.

Generated filters, PATCH bodies, resource documents, Bulk and SearchRequests and query parameters must
never produce a 5xx; every 4xx must be an RFC 7644 §3.12 Error; every 2xx list a valid ListResponse.
Grammatical filters are also checked against a differential oracle: scim2-models' own evaluator
(``ScimFilter[User[EnterpriseUser]](text).match(resource)``) over the very resources Entente returns.

Deliberate differences from the oracle, kept out of the generated filters:

- ``ne`` on a multi-valued attribute (``emails ne "x"``): RFC 7644 does not say whether it means "some
  value differs" or "no value equals". scim2-models reads it universally, Entente existentially (every
  comparison on a multi-valued attribute is "any value matches").
- Enterprise attributes without their URN (``employeeNumber eq "1"``): Entente resolves them when
  unambiguous, scim2-models treats them as unknown (false). Only the qualified form is generated.
- ``members.display`` (Group): Entente does not store it and refuses the filter; not generated.
- ``emails.primary`` where the client sent no ``primary``: Entente stores false, scim2-models sees null.
  The data set always states ``primary`` explicitly.
- Values are NFC and contain no ``"`` or ``\\``: scim2-filter-parser cannot lex an escaped quote, and
  Entente does not NFC-normalise before comparing.
"""

from __future__ import annotations

import json
import re
import string
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from scim2_models import Context, EnterpriseUser, Group, SCIMException, ScimFilter, User

from broker.scim.resources import POLICY
from tests.conftest import (
    ENTERPRISE_SCHEMA,
    ERROR_SCHEMA,
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    USER_SCHEMA,
    MakePartner,
    PartnerHandle,
)

UserModel = User[EnterpriseUser]
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
SCIM_TYPES = {
    "invalidFilter",
    "tooMany",
    "uniqueness",
    "mutability",
    "invalidSyntax",
    "invalidPath",
    "noTarget",
    "invalidValue",
    "invalidVers",
    "sensitive",
    # RFC 9865 cursor pagination
    "invalidCursor",
    "expiredCursor",
    "invalidCount",
}

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# -- response properties --------------------------------------------------------------------------
def check_error(response: Any) -> dict[str, Any]:
    """An RFC 7644 §3.12 Error: Error URN, status string equal to the HTTP status, detail, RFC scimType."""
    assert response.headers.get("content-type", "").startswith("application/scim+json"), response.headers
    body = response.json()
    assert body.get("schemas") == [ERROR_SCHEMA], body
    assert body.get("status") == str(response.status_code), body
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
    if "scimType" in body:
        assert body["scimType"] in SCIM_TYPES, body
    return body  # type: ignore[no-any-return]


def check_list(body: dict[str, Any]) -> None:
    """An RFC 7644 §3.4.2 ListResponse with integer counters (not strings: Okta insists)."""
    assert body.get("schemas") == [LIST_RESPONSE], body
    for key in ("totalResults", "startIndex", "itemsPerPage"):
        assert type(body.get(key)) is int, (key, body)
    resources = body.get("Resources", [])
    assert isinstance(resources, list)
    assert body["itemsPerPage"] == len(resources)
    assert body["totalResults"] >= len(resources)
    assert body["startIndex"] >= 1
    if body["itemsPerPage"]:
        assert "Resources" in body
    for resource in resources:
        assert isinstance(resource.get("id"), str) and resource["id"], resource


def check(response: Any, *, listing: bool = False) -> dict[str, Any] | None:
    """Never a 5xx; a 4xx is an Error; a 2xx list is a ListResponse. Returns the JSON body, if any."""
    if currently_in_test_context():
        event(f"HTTP {response.status_code}")
    assert response.status_code < 500, f"{response.status_code}: {response.text}"
    if response.status_code >= 400:
        return check_error(response)
    if response.status_code == 204 or not response.content:
        return None
    body = response.json()
    if listing and 200 <= response.status_code < 300:
        check_list(body)
    return body  # type: ignore[no-any-return]


# -- generated JSON -------------------------------------------------------------------------------
WEIRD_TEXT = st.sampled_from(
    [
        "\x00",
        "a\x00b",
        "\ud800",
        "x\udfff",
        "x" * 600,
        "é" * 513,
        " ",
        "\u202e",
        "🙂",
        "%_\\",
        "'; --",
    ]
)
"""Strings a database may refuse (NUL, lone surrogates, over-long) next to merely unusual ones."""
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["True", "False", "", "null", "bulkId:x", "urn:ietf:params:scim:schemas:core:2.0:User"]),
    WEIRD_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(["value", "type", "primary", "display"])),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


def mixed_case(text: str) -> st.SearchStrategy[str]:
    """The same name in a random casing: attribute names and operators are case-insensitive."""
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda flips: "".join(c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True))
    )


# -- the fixed data set for the differential oracle -----------------------------------------------
@dataclass
class DataSet:
    partner: PartnerHandle
    users: list[UserModel]
    groups: list[Group]
    strings: list[str]
    instants: list[str]
    user_filters: st.SearchStrategy[str] = st.nothing()
    """Grammatical User filters over this data set's values; built once, drawing is the costly part."""
    group_filters: st.SearchStrategy[str] = st.nothing()
    searches: st.SearchStrategy[Any] = st.nothing()


def _user_bodies(p: PartnerHandle) -> list[dict[str, Any]]:
    def email(local: str, kind: str, primary: bool) -> dict[str, Any]:
        return {"value": p.email(local), "type": kind, "primary": primary}

    return [
        p.user(
            "Alice.Smith",
            externalId="EXT-1",
            displayName="Alice Smith",
            title="Engineer",
            name={"givenName": "Alice", "familyName": "Smith"},
            emails=[email("Alice.Smith", "work", True), email("alice.home", "home", False)],
            phoneNumbers=[{"value": "+1 555 0100", "type": "work", "primary": True}],
            **{ENTERPRISE_SCHEMA: {"employeeNumber": "1001", "department": "R&D"}},
            schemas=[USER_SCHEMA, ENTERPRISE_SCHEMA],
        ),
        p.user(
            "bob",
            externalId="ext-1",
            displayName="Bob",
            title="100%_sure",
            active=False,
            name={"givenName": "Bob", "familyName": "Ärger"},
            emails=[email("bob", "work", True)],
            **{ENTERPRISE_SCHEMA: {"employeeNumber": "1002", "department": "Sales"}},
            schemas=[USER_SCHEMA, ENTERPRISE_SCHEMA],
        ),
        p.user(
            "carol",
            displayName="Zoë Carol",
            name={"familyName": "Smithers"},
            emails=[email("carol", "home", True)],
        ),
        p.user("dave_x", externalId="EXT-10", title="engineer", emails=[]),
        p.user(
            "Eve",
            displayName="eve",
            title="",
            nickName="evie",
            emails=[email("eve", "work", False), email("eve.other", "other", True)],
            **{ENTERPRISE_SCHEMA: {"department": "r&d", "employeeNumber": "1003"}},
            schemas=[USER_SCHEMA, ENTERPRISE_SCHEMA],
        ),
        p.user(
            "frank%",
            displayName="Frank_Zoë",
            title="Sales Engineer",
            active=True,
            emails=[email("frank%", "work", True)],
            phoneNumbers=[{"value": "+1 555 0199", "type": "mobile", "primary": False}],
        ),
    ]


@pytest.fixture
def dataset(partner: PartnerHandle) -> DataSet:
    """Six users (one managing two others), three groups (one nested), read back as Entente renders them."""
    created = [_post(partner, body) for body in _user_bodies(partner)]
    alice, bob, carol, dave, eve, _frank = (u["id"] for u in created)
    manager_ref = {"value": alice, "$ref": f"{partner.client.base_url}/Users/{alice}"}
    for subordinate in (bob, eve):
        response = partner.client.patch(
            f"/Users/{subordinate}",
            json={
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "add", "path": f"{ENTERPRISE_SCHEMA}:manager", "value": manager_ref}],
            },
        )
        assert response.status_code == 200, response.text
    engineers = partner.create_group("Engineers", [alice, dave])
    partner.create_group("Sales_100%", [bob])
    partner.create_group("All", [carol, engineers["id"], eve])
    users = partner.client.get("/Users", params={"count": 1000}).json()["Resources"]
    groups = partner.client.get("/Groups", params={"count": 1000}).json()["Resources"]
    user_models = [
        UserModel.model_validate(u, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=POLICY) for u in users
    ]
    group_models = [
        Group.model_validate(g, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=POLICY) for g in groups
    ]
    strings: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, str) and '"' not in value and "\\" not in value:
            strings.add(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key not in ("$ref", "location", "schemas", "created", "lastModified", "version"):
                    collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(users)
    collect(groups)
    instants = [u["meta"]["created"] for u in users] + [g["meta"]["lastModified"] for g in groups]
    ds = DataSet(partner, user_models, group_models, sorted(strings), instants)
    ds.user_filters = filters(ds, USER_ATTRS, USER_VALUE_PATHS)
    ds.group_filters = filters(ds, GROUP_ATTRS, GROUP_VALUE_PATHS)
    ds.searches = search_documents(ds.user_filters)
    return ds


def _post(partner: PartnerHandle, body: dict[str, Any]) -> dict[str, Any]:
    response = partner.client.post("/Users", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


# -- grammatical filters --------------------------------------------------------------------------
@dataclass(frozen=True)
class Attr:
    path: str
    type: str  # "string" | "boolean" | "dateTime"
    multi: bool = False
    urn: str | None = None  # a core attribute may be written with its schema URN, an extension one must


CORE_USER_ATTRS = [
    Attr("userName", "string"),
    Attr("displayName", "string"),
    Attr("title", "string"),
    Attr("externalId", "string"),
    Attr("id", "string"),
    Attr("nickName", "string"),
    Attr("name.givenName", "string"),
    Attr("name.familyName", "string"),
    Attr("active", "boolean"),
    Attr("emails.value", "string", multi=True),
    Attr("emails.type", "string", multi=True),
    Attr("emails", "string", multi=True),
    Attr("phoneNumbers.value", "string", multi=True),
    Attr("groups.value", "string", multi=True),
    Attr("groups.display", "string", multi=True),
    Attr("meta.created", "dateTime"),
    Attr("meta.lastModified", "dateTime"),
]
USER_ATTRS = [Attr(a.path, a.type, a.multi, USER_SCHEMA) for a in CORE_USER_ATTRS] + [
    Attr("employeeNumber", "string", urn=ENTERPRISE_SCHEMA),
    Attr("department", "string", urn=ENTERPRISE_SCHEMA),
    Attr("manager.value", "string", urn=ENTERPRISE_SCHEMA),
]
GROUP_ATTRS = [
    Attr("displayName", "string", urn=GROUP_SCHEMA),
    Attr("externalId", "string", urn=GROUP_SCHEMA),
    Attr("id", "string", urn=GROUP_SCHEMA),
    Attr("members.value", "string", multi=True, urn=GROUP_SCHEMA),
    Attr("members", "string", multi=True, urn=GROUP_SCHEMA),
    Attr("members.type", "string", multi=True, urn=GROUP_SCHEMA),
    Attr("meta.created", "dateTime", urn=GROUP_SCHEMA),
    Attr("meta.lastModified", "dateTime", urn=GROUP_SCHEMA),
]
# value paths: attribute -> its filterable sub-attributes
USER_VALUE_PATHS = {
    "emails": [Attr("value", "string"), Attr("type", "string"), Attr("primary", "boolean")],
    "phoneNumbers": [Attr("value", "string"), Attr("type", "string"), Attr("primary", "boolean")],
    "groups": [Attr("value", "string"), Attr("display", "string")],
}
GROUP_VALUE_PATHS = {"members": [Attr("value", "string"), Attr("type", "string")]}
OPERATORS = {
    "string": ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr"],
    "boolean": ["eq", "ne", "pr"],
    "dateTime": ["eq", "ne", "gt", "ge", "lt", "le", "pr"],
}
ALPHABET = string.ascii_letters + string.digits + "@.-_% &éÄ+"


def _string_values(pool: list[str]) -> st.SearchStrategy[str]:
    def cut(value: str, start: int, end: int) -> str:
        return value[min(start, len(value)) : max(start, min(end, len(value)))]

    whole = st.sampled_from(pool)
    pieces = st.builds(cut, whole, st.integers(0, 8), st.integers(0, 40))
    recased = st.tuples(st.one_of(whole, pieces), st.sampled_from([str, str.upper, str.lower, str.swapcase])).map(
        lambda pair: pair[1](pair[0])
    )
    return st.one_of(whole, pieces, recased, st.text(ALPHABET, max_size=6))


def comparison(attr: Attr, ds: DataSet, *, in_value_path: bool = False) -> st.SearchStrategy[str]:
    """``attr op value`` (or ``attr pr``) with a value of the attribute's type."""
    ops = [o for o in OPERATORS[attr.type] if not (attr.multi and o == "ne")]
    name_strategy: st.SearchStrategy[str] = mixed_case(attr.path)
    if attr.urn is not None and not in_value_path:
        if attr.urn == ENTERPRISE_SCHEMA:
            name_strategy = mixed_case(attr.path).map(lambda n: f"{ENTERPRISE_SCHEMA}:{n}")
        else:
            urn = attr.urn
            name_strategy = st.tuples(st.booleans(), mixed_case(attr.path)).map(
                lambda pair: f"{urn}:{pair[1]}" if pair[0] else pair[1]
            )
    if attr.type == "boolean":
        values: st.SearchStrategy[str] = st.sampled_from(["true", "false"])
    elif attr.type == "dateTime":
        values = st.sampled_from(["2000-01-01T00:00:00Z", "2999-12-31T23:59:59Z", *ds.instants]).map(json.dumps)
    else:
        values = _string_values(ds.strings).map(lambda v: json.dumps(v, ensure_ascii=False))

    def build(name: str, op: str, value: str, cased: bool, null: bool) -> str:
        op_text = op.upper() if cased else op
        if op == "pr":
            return f"{name} {op_text}"
        if null and op in ("eq", "ne") and not attr.multi:
            value = "null"
        return f"{name} {op_text} {value}"

    return st.builds(
        build,
        name_strategy,
        st.sampled_from(ops),
        values,
        st.booleans(),
        st.integers(0, 9).map(lambda n: n == 0),
    )


def combine(leaf: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Nest leaves with and/or/not and parentheses, mixed-case keywords included."""

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.builds(
                lambda a, op, b: f"{a} {op} {b}",
                children,
                st.sampled_from(["and", "or", "AND", "Or"]),
                children,
            ),
            st.builds(lambda a, kw: f"{kw} ({a})", children, st.sampled_from(["not", "NOT", "Not"])),
            children.map(lambda a: f"({a})"),
        )

    return st.recursive(leaf, extend, max_leaves=5)


def filters(ds: DataSet, attrs: list[Attr], value_paths: dict[str, list[Attr]]) -> st.SearchStrategy[str]:
    plain = st.one_of(*(comparison(a, ds) for a in attrs))
    paths = []
    for name, subs in value_paths.items():
        inner = combine(st.one_of(*(comparison(s, ds, in_value_path=True) for s in subs)))
        paths.append(st.builds(lambda n, i: f"{n}[{i}]", mixed_case(name), inner))
        # Entra's `emails[type eq "work"].value eq "x"`: value filter, then a sub-attribute comparison
        for sub in subs:
            tail = comparison(sub, ds, in_value_path=True)
            paths.append(
                st.builds(
                    lambda n, i, t: f"{n}[{i}].{t}",
                    mixed_case(name),
                    comparison(subs[0], ds, in_value_path=True),
                    tail,
                )
            )
    return combine(st.one_of(plain, *paths))


def _ids(response: Any) -> set[str]:
    body = check(response, listing=True)
    assert response.status_code == 200, response.text
    assert body is not None
    assert body["totalResults"] == body["itemsPerPage"], "the whole data set fits one page"
    return {r["id"] for r in body.get("Resources", [])}


def _oracle(model: Any, text: str, resources: list[Any]) -> set[str] | None:
    """The ids scim2-models selects, or None when it refuses the filter for its model.

    It refuses a value its attribute cannot hold (``emails.value eq "Alice"`` is not an email address);
    Entente compares such values as plain strings, so only the response shape is checked then.
    """
    try:
        bound = ScimFilter[model](text)
    except SCIMException:
        event("oracle refused the filter")
        return None
    return {r.id for r in resources if bound.match(r)}


@PROPERTY
@given(data=st.data())
def test_user_filters_agree_with_scim2_models(dataset: DataSet, data: st.DataObject) -> None:
    """For grammatical filters, Entente's SQL selects exactly the users scim2-models' evaluator selects,
    through GET /Users?filter= and through POST /Users/.search alike (which keeps PII out of URLs)."""
    text = data.draw(dataset.user_filters, label="filter")
    if data.draw(st.booleans(), label="via .search"):
        body = {"schemas": [SEARCH_REQUEST], "filter": text, "count": 1000}
        response = dataset.partner.client.post("/Users/.search", json=body)
    else:
        response = dataset.partner.client.get("/Users", params={"filter": text, "count": 1000})
    expected = _oracle(UserModel, text, dataset.users)
    if expected is None:
        check(response, listing=True)
    else:
        assert _ids(response) == expected


@PROPERTY
@given(data=st.data())
def test_group_filters_agree_with_scim2_models(dataset: DataSet, data: st.DataObject) -> None:
    """The same oracle for Groups (displayName, externalId, id, members, meta)."""
    text = data.draw(dataset.group_filters, label="filter")
    response = dataset.partner.client.get("/Groups", params={"filter": text, "count": 1000})
    expected = _oracle(Group, text, dataset.groups)
    if expected is None:
        check(response, listing=True)
    else:
        assert _ids(response) == expected


# -- arbitrary filter text ------------------------------------------------------------------------
FILTER_FRAGMENTS = st.sampled_from(
    [
        "userName",
        "emails",
        "[",
        "]",
        "(",
        ")",
        ".",
        '"',
        "\\",
        " eq ",
        " pr",
        " and ",
        " or ",
        "not ",
        " co ",
        " gt ",
        "null",
        "true",
        '"x"',
        "urn:ietf:params:scim:schemas:core:2.0:User:",
        "members[value eq ",
        "meta.created",
        '"2020-13-45"',
        "\x00",
        "é",
        "%",
        "_",
        "1e309",
        "-",
        " ",
        "[[[[",
        "))))",
        f"{ENTERPRISE_SCHEMA}:",
        "manager.value",
        "groups",
        "active",
        "ne",
        "titel",
    ]
)


@PROPERTY
@given(
    text=st.one_of(st.text(max_size=60), st.lists(FILTER_FRAGMENTS, max_size=14).map("".join)),
    endpoint=st.sampled_from(["/Users", "/Groups"]),
)
def test_arbitrary_filter_text_is_never_a_server_error(partner: PartnerHandle, text: str, endpoint: str) -> None:
    """Any text as a filter is a ListResponse or 400 invalidFilter, never a 5xx nor a silent widening."""
    response = partner.client.get(endpoint, params={"filter": text})
    body = check(response, listing=True)
    if response.status_code != 200:
        assert response.status_code == 400 and body is not None, response.text
        assert body.get("scimType") in ("invalidFilter", "invalidValue"), body


def test_deep_and_long_filters_are_refused_cleanly(partner: PartnerHandle) -> None:
    """Pathological nesting and length answer 400 invalidFilter, not a RecursionError 500."""
    for text in [
        "(" * 3000 + 'userName eq "x"' + ")" * 3000,
        "not (" * 400 + "title pr" + ")" * 400,
        " or ".join(['title eq "x"'] * 500),
        'userName eq "' + "a" * 10000 + '"',
    ]:
        response = partner.client.get("/Users", params={"filter": text})
        assert response.status_code == 400, response.text[:300]
        assert check_error(response)["scimType"] == "invalidFilter"


# -- the world of the write properties ------------------------------------------------------------
# Strategies are built once, at import, with placeholders filled in after each draw: building a
# strategy per example costs more than the HTTP round trips it feeds. Each body is well-formed half
# the time, a well-formed body with one or two keys broken a quarter of the time, and any JSON else,
# so the success paths are exercised as much as the refusals.
SELF, STRANGER, DOMAIN, FRESH = "{self}", "{stranger}", "{domain}", "{fresh}"
MEMBERS = ("{member0}", "{member1}", "{member2}")


@dataclass
class World:
    """A partner for the write-heavy properties (examples share it, each makes fresh resources)."""

    partner: PartnerHandle
    members: list[str]
    """Three users of the partner, for member values."""
    stranger: str
    """A real user id of another partner, which must behave exactly like a missing id."""

    def fill(self, value: Any, own: str) -> Any:
        """The drawn value with its placeholders replaced by this world's ids and domain."""
        if isinstance(value, str):
            pairs = [(SELF, own), (STRANGER, self.stranger), (DOMAIN, self.partner.domain)]
            pairs += list(zip(MEMBERS, self.members, strict=True))
            for key, real in pairs:
                value = value.replace(key, real)
            while FRESH in value:  # a new unique token per occurrence: uniqueness is per partner
                value = value.replace(FRESH, uuid.uuid4().hex[:12], 1)
            return value
        if isinstance(value, list):
            return [self.fill(v, own) for v in value]
        if isinstance(value, dict):
            return {self.fill(k, own): self.fill(v, own) for k, v in value.items()}
        return value

    def send(self, method: str, url: str, body: Any, own: str = "none") -> Any:
        """The request with the filled body as ASCII JSON, so lone surrogates travel as escapes."""
        content = json.dumps(self.fill(body, own))
        return self.partner.client.request(
            method, url, content=content, headers={"content-type": "application/scim+json"}
        )


@pytest.fixture
def world(make_partner: MakePartner) -> World:
    stranger = make_partner().create_user("stranger")["id"]
    partner = make_partner()
    return World(partner, [partner.create_user(f"m{i}")["id"] for i in range(3)], stranger)


@st.composite
def broken(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]], keys: list[str]) -> Any:
    """A valid document with one or two keys set to junk, dropped, or recased."""
    doc = dict(draw(valid))
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(set(keys) | set(doc))))
        action = draw(st.sampled_from(["set", "drop", "recase"]))
        if action == "set":
            doc[key] = draw(st.one_of(SCALARS, JSON_VALUES))
        elif action == "drop":
            doc.pop(key, None)
        elif key in doc:
            doc[draw(mixed_case(key))] = doc.pop(key)
    return doc


def bodies(valid: st.SearchStrategy[dict[str, Any]], keys: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, broken(valid, keys), JSON_VALUES)


IDS = st.sampled_from([SELF, *MEMBERS, STRANGER, "missing", str(uuid.UUID(int=7)), "", "a\x00b"])
MEMBER_REFS = st.sampled_from([{"value": m} for m in MEMBERS])
ANY_MEMBER_REFS = st.one_of(MEMBER_REFS, IDS.map(lambda i: {"value": i}))
FRESH_ADDRESSES = st.just(f"d{FRESH}@{DOMAIN}")
ADDRESSES = st.one_of(
    FRESH_ADDRESSES,
    st.sampled_from([f"P1@{DOMAIN}", "x@elsewhere.test", "not-an-email", "", f"a\x00@{DOMAIN}"]),
)
_PLAIN_TEXT = st.text(string.ascii_letters + " éÄ-'.", min_size=1, max_size=12)
NAME_TEXT = st.one_of(_PLAIN_TEXT, _PLAIN_TEXT, _PLAIN_TEXT, WEIRD_TEXT)
EMAIL_ITEMS = st.fixed_dictionaries(
    {"value": FRESH_ADDRESSES},
    optional={
        "type": st.sampled_from(["work", "home", "other"]),
        "primary": st.booleans(),
        "display": NAME_TEXT,
    },
)
USER_KEYS = [
    "schemas",
    "userName",
    "displayName",
    "active",
    "name",
    "emails",
    "externalId",
    "id",
    "meta",
    "groups",
    "password",
    ENTERPRISE_SCHEMA,
    "phoneNumbers",
    "title",
    "bogus",
]
VALID_USERS = st.fixed_dictionaries(
    {
        "schemas": st.sampled_from(
            [
                [USER_SCHEMA],
                [USER_SCHEMA, ENTERPRISE_SCHEMA],
                ["urn:scim:schemas:core:2.0"],
                [USER_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/User"],
            ]
        ),
        "userName": FRESH_ADDRESSES,
    },
    optional={
        "displayName": NAME_TEXT,
        "nickName": NAME_TEXT,
        "title": NAME_TEXT,
        "externalId": st.just(FRESH),
        "active": st.sampled_from([True, False, "True", "False"]),
        "name": st.fixed_dictionaries(
            {}, optional={"givenName": NAME_TEXT, "familyName": NAME_TEXT, "formatted": NAME_TEXT}
        ),
        "emails": st.lists(EMAIL_ITEMS, max_size=2),
        "phoneNumbers": st.lists(
            st.fixed_dictionaries(
                {"value": st.sampled_from(["+1 555 0100", "0612"])},
                optional={"type": st.sampled_from(["work", "mobile"])},
            ),
            max_size=2,
        ),
        "locale": st.sampled_from(["en-US", "fr-FR"]),
        "id": st.just(SELF),
        "meta": st.just({"resourceType": "User"}),
        "groups": st.lists(MEMBER_REFS, max_size=1),
        "password": NAME_TEXT,
        ENTERPRISE_SCHEMA: st.fixed_dictionaries(
            {},
            optional={
                "employeeNumber": st.from_regex(r"[0-9]{1,6}", fullmatch=True),
                "department": NAME_TEXT,
                "manager": st.one_of(MEMBER_REFS, st.sampled_from(MEMBERS)),
            },
        ),
    },
)
USER_BODIES = bodies(VALID_USERS, USER_KEYS)
GROUP_KEYS = ["schemas", "displayName", "members", "externalId", "id", "meta", "bogus"]
VALID_GROUPS = st.fixed_dictionaries(
    {
        "schemas": st.sampled_from(
            [
                [GROUP_SCHEMA],
                [GROUP_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            ]
        ),
        "displayName": st.just(f"grp {FRESH}"),
    },
    optional={
        "members": st.lists(ANY_MEMBER_REFS, max_size=3),
        "externalId": st.just(FRESH),
        "id": st.just(SELF),
        "meta": st.just({"resourceType": "Group"}),
    },
)
GROUP_BODIES = bodies(VALID_GROUPS, GROUP_KEYS)


# -- PATCH ----------------------------------------------------------------------------------------
VERBS = st.sampled_from(["add", "replace", "Add", "Replace", "REPLACE"])


def _op(path: str | None, values: st.SearchStrategy[Any], verbs: st.SearchStrategy[str] = VERBS) -> Any:
    def build(verb: str, value: Any) -> dict[str, Any]:
        return {"op": verb, "value": value} if path is None else {"op": verb, "path": path, "value": value}

    return st.builds(build, verbs, values)


def _removal(paths: list[str]) -> Any:
    return st.builds(
        lambda verb, path: {"op": verb, "path": path},
        st.sampled_from(["remove", "Remove"]),
        st.sampled_from(paths),
    )


USER_OPERATIONS = st.one_of(
    *(
        _op(path, NAME_TEXT)
        for path in [
            "displayName",
            "title",
            "nickName",
            "name.givenName",
            "name.familyName",
            f"{ENTERPRISE_SCHEMA}:department",
            f"{USER_SCHEMA}:displayName",
        ]
    ),
    _op("userName", ADDRESSES),
    _op("externalId", st.just(FRESH)),
    _op("active", st.sampled_from([True, False, "True", "False"])),
    _op("emails", st.lists(EMAIL_ITEMS, min_size=1, max_size=2)),
    _op('emails[type eq "work"].value', ADDRESSES),
    _op(f"{ENTERPRISE_SCHEMA}:manager", st.one_of(MEMBER_REFS, st.sampled_from(MEMBERS), IDS)),
    _op(f"{ENTERPRISE_SCHEMA}:employeeNumber", st.from_regex(r"[0-9]{1,6}", fullmatch=True)),
    _op(
        None,
        st.fixed_dictionaries(
            {},
            optional={
                "displayName": NAME_TEXT,
                "name.givenName": NAME_TEXT,
                "active": st.sampled_from([True, "False"]),
                f"{ENTERPRISE_SCHEMA}:employeeNumber": st.just("42"),
                "title": NAME_TEXT,
                f"{ENTERPRISE_SCHEMA}:manager": st.sampled_from(MEMBERS),
            },
        ),
    ),
    _removal(
        [
            "title",
            "nickName",
            "displayName",
            "name.givenName",
            'emails[type eq "home"]',
            "phoneNumbers",
            f"{ENTERPRISE_SCHEMA}:manager",
            "externalId",
            "emails",
            "name",
        ]
    ),
)
GROUP_OPERATIONS = st.one_of(
    _op(
        "members",
        st.lists(ANY_MEMBER_REFS, min_size=1, max_size=3),
        st.sampled_from(["add", "Add", "replace"]),
    ),
    _removal(
        [f'members[value eq "{m}"]' for m in MEMBERS] + ['members[value eq "{stranger}"]', 'members[type eq "User"]']
    ),
    st.builds(
        lambda verb, refs: {"op": verb, "path": "members", "value": refs},  # Entra: remove with a value
        st.sampled_from(["remove", "Remove"]),
        st.lists(ANY_MEMBER_REFS, min_size=1, max_size=2),
    ),
    _op("displayName", st.just(f"renamed {FRESH}")),
    _op("externalId", st.just(FRESH)),
    _op(
        None,
        st.fixed_dictionaries(
            {},
            optional={
                "displayName": st.just(f"merged {FRESH}"),
                "members": st.lists(MEMBER_REFS, max_size=2),
                "externalId": st.just("ext"),
            },
        ),
    ),
    _removal(["externalId", "members"]),
)
USER_PATH_POOL = [
    "userName",
    "displayName",
    "active",
    "name.bogus",
    'emails[type eq "work"]',
    'emails[value co "@"].primary',
    'phoneNumbers[type eq "mobile"].value',
    f"{ENTERPRISE_SCHEMA}:manager.value",
    "id",
    "meta",
    "meta.version",
    "groups",
    "password",
    "schemas",
    "bogus",
    "emails[",
    "emails]",
    "emails[type eq]",
    "",
    "roles[value pr]",
    'addresses[type eq "work"].locality',
    "urn:bogus:Thing:attr",
    "urn:scim:schemas:extension:enterprise:2.0:title",
]
GROUP_PATH_POOL = [
    "members.value",
    '"members[value eq "{member1}"].display',
    "id",
    "meta",
    "members[",
    'members[display co "x"]',
    "",
    "bogus",
    f"{GROUP_SCHEMA}:displayName",
    f"{GROUP_SCHEMA}:members",
    'members[value eq "x" or not (type eq "Group")]',
]


@st.composite
def patches(draw: st.DrawFn, operations: st.SearchStrategy[Any], paths: list[str]) -> Any:
    """A PatchOp of valid operations, sometimes with one operation's op, path or value broken."""
    body: dict[str, Any] = {
        "schemas": [PATCH_SCHEMA],
        "Operations": draw(st.lists(operations, min_size=1, max_size=3)),
    }
    if draw(st.integers(0, 2)) == 0:
        operation = dict(draw(st.sampled_from(body["Operations"])))
        field = draw(st.sampled_from(["op", "path", "value", "schemas", "Operations"]))
        junk = {
            "op": st.one_of(st.sampled_from(["copy", "test", "", "delete"]), SCALARS),
            "path": st.one_of(st.sampled_from(paths), st.text(max_size=20), SCALARS),
        }.get(field, JSON_VALUES)
        if field in ("schemas", "Operations"):
            body[field] = draw(junk)
        else:
            operation[field] = draw(junk)
            body["Operations"] = [*body["Operations"], operation]
    return body


_USER_PATCHES = patches(USER_OPERATIONS, USER_PATH_POOL)
USER_PATCHES = st.one_of(
    _USER_PATCHES, _USER_PATCHES, JSON_VALUES.map(lambda v: {"schemas": [PATCH_SCHEMA], "Operations": v})
)
_GROUP_PATCHES = patches(GROUP_OPERATIONS, GROUP_PATH_POOL)
GROUP_PATCHES = st.one_of(_GROUP_PATCHES, _GROUP_PATCHES, JSON_VALUES)


@settings(PROPERTY, max_examples=80)  # each example is two documents or several round trips
@given(data=st.data())
def test_user_patch_is_atomic_and_never_a_server_error(world: World, data: st.DataObject) -> None:
    """Any PATCH body: 200 with the same id, consistent with a fresh GET; or a §3.12 Error and no change."""
    partner = world.partner
    before = partner.create_user(
        f"u{uuid.uuid4().hex[:10]}",
        displayName="Before",
        title="T",
        name={"givenName": "G", "familyName": "F"},
    )
    response = world.send("PATCH", f"/Users/{before['id']}", data.draw(USER_PATCHES, label="body"), before["id"])
    result = check(response)
    after = partner.client.get(f"/Users/{before['id']}")
    assert after.status_code == 200
    if response.status_code >= 400:
        assert after.json() == before, "a refused PATCH changed the user"
        return
    assert response.status_code in (200, 204), response.text
    if result is not None:
        assert result["id"] == before["id"]
        assert result == after.json()
        UserModel.model_validate(result, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=POLICY)


@settings(PROPERTY, max_examples=80)  # each example is two documents or several round trips
@given(data=st.data())
def test_group_patch_is_atomic_and_never_a_server_error(world: World, data: st.DataObject) -> None:
    """Any group PATCH: a consistent 200/204 whose members and User.groups agree, or an Error, no change."""
    partner = world.partner
    before = partner.create_group(f"g{uuid.uuid4().hex[:10]}", world.members[:1])
    response = world.send("PATCH", f"/Groups/{before['id']}", data.draw(GROUP_PATCHES, label="body"), before["id"])
    result = check(response)
    after = partner.client.get(f"/Groups/{before['id']}")
    assert after.status_code == 200
    if response.status_code >= 400:
        assert after.json() == before, "a refused PATCH changed the group"
        return
    assert response.status_code in (200, 204), response.text
    member_ids = {m["value"] for m in after.json().get("members", [])}
    assert member_ids <= set(world.members), "only this partner's users can be members"
    listed = partner.client.get("/Users", params={"filter": f'groups.value eq "{before["id"]}"'}).json()
    assert {u["id"] for u in listed.get("Resources", [])} == member_ids, "User.groups disagrees with members"
    if result is not None:
        assert result == after.json()


# -- POST / PUT documents -------------------------------------------------------------------------
def _created_consistently(partner: PartnerHandle, endpoint: str, response: Any, body: dict[str, Any]) -> None:
    assert response.headers["location"].endswith(f"/{endpoint}/{body['id']}")
    assert response.headers["etag"] == body["meta"]["version"]
    fetched = partner.client.get(f"/{endpoint}/{body['id']}")
    assert fetched.status_code == 200 and fetched.json() == body


@settings(PROPERTY, max_examples=60)  # each example is two documents or several round trips
@given(data=st.data())
def test_user_post_and_put_documents(world: World, data: st.DataObject) -> None:
    """Any document to POST /Users and PUT /Users/{id}: 201/200 and readable back, or a §3.12 Error."""
    partner = world.partner
    response = world.send("POST", "/Users", data.draw(USER_BODIES, label="post"))
    body = check(response)
    if response.status_code == 201:
        assert body is not None and "password" not in body
        _created_consistently(partner, "Users", response, body)
    else:
        assert response.status_code in (400, 409), response.text
    before = partner.create_user(f"put{uuid.uuid4().hex[:10]}")
    response = world.send("PUT", f"/Users/{before['id']}", data.draw(USER_BODIES, label="put"), before["id"])
    body = check(response)
    after = partner.client.get(f"/Users/{before['id']}").json()
    if response.status_code == 200:
        assert body == after and body["id"] == before["id"] and "password" not in body
    else:
        assert response.status_code in (400, 409), response.text
        assert after == before


@settings(PROPERTY, max_examples=60)  # each example is two documents or several round trips
@given(data=st.data())
def test_group_post_and_put_documents(world: World, data: st.DataObject) -> None:
    """Any document to POST /Groups and PUT /Groups/{id}: created/replaced consistently, or an Error."""
    partner = world.partner
    response = world.send("POST", "/Groups", data.draw(GROUP_BODIES, label="post"))
    body = check(response)
    if response.status_code == 201:
        assert body is not None
        _created_consistently(partner, "Groups", response, body)
        assert {m["value"] for m in body.get("members", [])} <= set(world.members)
    else:
        assert response.status_code in (400, 409), response.text
    before = partner.create_group(f"put {uuid.uuid4().hex[:10]}", world.members[:1])
    response = world.send("PUT", f"/Groups/{before['id']}", data.draw(GROUP_BODIES, label="put"), before["id"])
    body = check(response)
    after = partner.client.get(f"/Groups/{before['id']}").json()
    if response.status_code == 200:
        assert body == after
        assert {m["value"] for m in after.get("members", [])} <= set(world.members)
    else:
        assert response.status_code in (400, 409), response.text
        assert after == before


# -- Bulk -----------------------------------------------------------------------------------------
@st.composite
def coherent_bulk(draw: st.DrawFn) -> dict[str, Any]:
    """Users and groups created by bulkId, groups naming users by bulkId (forward references too),
    then writes to bulkIds, this partner's ids and the stranger's, in any order."""
    users = draw(st.integers(0, 3))
    refs = [f"bulkId:u{i}" for i in range(users)] + list(MEMBERS) + [STRANGER]
    ops: list[dict[str, Any]] = [
        {"method": "POST", "path": "/Users", "bulkId": f"u{i}", "data": draw(VALID_USERS)} for i in range(users)
    ]
    for j in range(draw(st.integers(0, 2))):
        members = draw(st.lists(st.sampled_from(refs), max_size=3, unique=True))
        ops.append(
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": f"g{j}",
                "data": {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": f"bulk {FRESH}",
                    "members": [{"value": m} for m in members],
                },
            }
        )
    created = [r for r in refs if r.startswith("bulkId:u")]
    for _ in range(draw(st.integers(0, 3))):
        method = draw(st.sampled_from(["PUT", "PATCH", "DELETE"]))
        # the world's members outlive every example: only users of this request are deleted
        target = draw(st.sampled_from(created + [STRANGER, "missing"] + ([] if method == "DELETE" else list(MEMBERS))))
        data: Any = None
        if method == "PUT":
            data = draw(VALID_USERS)
        elif method == "PATCH":
            data = {"schemas": [PATCH_SCHEMA], "Operations": [draw(USER_OPERATIONS)]}
        ops.append({"method": method, "path": f"/Users/{target}", **({"data": data} if data else {})})
    order = draw(st.permutations(range(len(ops))))
    body: dict[str, Any] = {"schemas": [BULK_REQUEST], "Operations": [ops[i] for i in order]}
    if draw(st.booleans()):
        body["failOnErrors"] = draw(st.integers(1, 3))
    return body


BULK_KEYS = ["schemas", "Operations", "failOnErrors"]
BULK_BODIES = st.one_of(
    coherent_bulk(),
    coherent_bulk(),
    broken(coherent_bulk(), BULK_KEYS),
    JSON_VALUES,
    st.fixed_dictionaries({"schemas": st.just([BULK_REQUEST]), "Operations": st.lists(JSON_VALUES, max_size=3)}),
)


@PROPERTY
@given(data=st.data())
def test_bulk_requests(world: World, data: st.DataObject) -> None:
    """Any BulkRequest: a BulkResponse whose every failed operation carries a §3.12 Error, or an Error.

    Whatever the request, the stranger's user is never touched, and no operation on it succeeds.
    """
    partner = world.partner
    request = data.draw(BULK_BODIES, label="bulk")
    response = world.send("POST", "/Bulk", request)
    body = check(response)
    assert partner.client.get(f"/Users/{world.stranger}").status_code == 404
    if response.status_code >= 400:
        return
    assert response.status_code == 200 and body is not None
    assert body["schemas"] == [BULK_RESPONSE]
    sent = request.get("Operations", request.get("operations"))  # as the server reads it
    if "failOnErrors" not in request:
        assert len(body["Operations"]) == len(sent), "one result per operation"
    for result in body["Operations"]:
        assert isinstance(result["status"], str) and re.fullmatch(r"[1-5]\d\d", result["status"]), result
        assert not result["status"].startswith("5"), result
        if int(result["status"]) >= 400:
            error = result["response"]
            assert error["schemas"] == [ERROR_SCHEMA] and error["status"] == result["status"], result
            assert isinstance(error.get("detail"), str) and error["detail"]
            assert error.get("scimType", "invalidValue") in SCIM_TYPES
        else:
            assert world.stranger not in result.get("location", ""), result
            deleted = {
                str(o.get("path")).rpartition("/")[2]
                for o in sent
                if isinstance(o, dict) and o.get("method") == "DELETE"
            }
            if result["method"] == "POST" and f"bulkId:{result.get('bulkId')}" not in deleted:
                assert partner.client.get(result["location"].split("/scim/v2", 1)[1]).status_code == 200


# -- SearchRequest and query parameters -----------------------------------------------------------
ATTRIBUTE_NAMES = st.sampled_from(
    [
        "userName",
        "emails",
        "emails.value",
        "name.givenName",
        "members",
        "displayName",
        "id",
        "meta",
        "groups",
        "password",
        f"{ENTERPRISE_SCHEMA}:employeeNumber",
        f"{USER_SCHEMA}:userName",
        "bogus",
        "",
        "emails[",
        "x.y.z",
    ]
)
INTEGERS = st.one_of(
    st.integers(-5, 30),
    st.sampled_from([2**80, 2**63, 2**63 - 1, 2**31, -(2**63), -(2**80)]),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from(["", "abc", "1.5", " 2 ", "0x10", "1e3", "٣", "-0"]),
)
SORT_BY = st.one_of(
    st.sampled_from(
        [
            "userName",
            "displayName",
            "emails",
            "emails.value",
            "name.familyName",
            "meta.created",
            "id",
            "members",
            "bogus",
            "emails.type",
            "",
            f"{ENTERPRISE_SCHEMA}:employeeNumber",
            f"{USER_SCHEMA}:title",
        ]
    ),
    st.text(max_size=10),
)


@PROPERTY
@given(data=st.data())
def test_search_request_documents(dataset: DataSet, data: st.DataObject) -> None:
    """Any JSON to the three .search endpoints: a ListResponse or a §3.12 Error."""
    endpoint = data.draw(st.sampled_from(["/.search", "/Users/.search", "/Groups/.search"]), label="endpoint")
    document = data.draw(dataset.searches, label="search")
    content = json.dumps(document)  # ASCII JSON: lone surrogates travel as escapes
    headers = {"content-type": "application/scim+json"}
    check(dataset.partner.client.post(endpoint, content=content, headers=headers), listing=True)


def search_documents(user_filters: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """SearchRequests: well-formed (filters from ``user_filters``), with a key or two broken, or any JSON."""
    valid = st.fixed_dictionaries(
        {"schemas": st.sampled_from([[SEARCH_REQUEST], [SEARCH_REQUEST.lower()]])},
        optional={
            "filter": user_filters,
            "count": st.integers(-2, 12),
            "startIndex": st.integers(-2, 12),
            "sortBy": st.sampled_from(["userName", "displayName", "emails", "meta.created", "name.familyName"]),
            "sortOrder": st.sampled_from(["ascending", "Descending"]),
            "attributes": st.lists(st.sampled_from(["userName", "emails.value", "displayName", "members"]), max_size=2),
            "excludedAttributes": st.lists(st.sampled_from(["emails", "members", "groups", "name"]), max_size=2),
        },
    )
    keys = [
        "schemas",
        "filter",
        "count",
        "startIndex",
        "sortBy",
        "sortOrder",
        "attributes",
        "excludedAttributes",
    ]
    return st.one_of(valid, valid, broken(valid, keys), JSON_VALUES)


_QUERY_VALUES = {
    "count": INTEGERS,
    "startIndex": INTEGERS,
    "sortBy": SORT_BY,
    "sortOrder": st.sampled_from(["ascending", "descending", "DESCENDING", "", "sideways"]),
    "attributes": st.lists(ATTRIBUTE_NAMES, max_size=3).map(",".join),
    "excludedAttributes": st.lists(ATTRIBUTE_NAMES, max_size=3).map(",".join),
}
QUERY_PARAMETERS = st.fixed_dictionaries(
    {},
    optional={
        **{k: v.map(str) for k, v in _QUERY_VALUES.items()},
        **{k.upper(): v.map(str) for k, v in _QUERY_VALUES.items() if k in ("count", "startIndex")},
    },
)


@PROPERTY
@given(data=st.data())
def test_query_parameters(dataset: DataSet, data: st.DataObject) -> None:
    """Any count/startIndex/sortBy/sortOrder/attributes: a ListResponse honouring them, or an Error."""
    params = data.draw(QUERY_PARAMETERS, label="params")
    endpoint = data.draw(st.sampled_from(["/Users", "/Groups"]), label="endpoint")
    response = dataset.partner.client.get(endpoint, params=params)
    body = check(response, listing=True)
    if response.status_code != 200:
        return
    assert body is not None
    total = len(dataset.users) if endpoint == "/Users" else len(dataset.groups)
    assert body["totalResults"] == total
    lowered = {k.lower(): v for k, v in params.items()}
    count = _int_or_none(lowered.get("count"))
    if count is not None:
        assert body["itemsPerPage"] <= max(count, 0)
    start = _int_or_none(lowered.get("startindex"))
    assert body["startIndex"] == (max(start, 1) if start is not None else 1)
    page = total if count is None else max(count, 0)
    assert body["itemsPerPage"] == max(0, min(total - body["startIndex"] + 1, page))


def _int_or_none(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


@settings(PROPERTY, max_examples=30)
@given(
    count=st.integers(1, 7),
    sort_by=st.sampled_from(
        [
            None,
            "userName",
            "title",
            "emails",
            "name.familyName",
            "meta.created",
            f"{ENTERPRISE_SCHEMA}:employeeNumber",
        ]
    ),
    order=st.sampled_from(["ascending", "descending"]),
)
def test_pages_partition_the_result(dataset: DataSet, count: int, sort_by: str | None, order: str) -> None:
    """Paging with any count visits every resource once, in the same order as one big page (Okta pages)."""
    client = dataset.partner.client
    base = {"sortOrder": order, **({"sortBy": sort_by} if sort_by else {})}
    whole = [r["id"] for r in client.get("/Users", params={**base, "count": 1000}).json()["Resources"]]
    paged: list[str] = []
    start = 1
    while start <= len(whole):
        body = check(client.get("/Users", params={**base, "count": count, "startIndex": start}), listing=True)
        assert body is not None
        paged.extend(r["id"] for r in body.get("Resources", []))
        start += count
    assert paged == whole
    assert sorted(whole) == sorted(u.id for u in dataset.users)
    if sort_by == "userName":
        names = [next(u.user_name for u in dataset.users if u.id == i).lower() for i in whole]
        assert names == sorted(names, reverse=order == "descending")


def test_filter_regressions_the_oracle_guards(dataset: DataSet) -> None:
    """Cases the differential oracle catches, pinned: SQL three-valued logic and and/or precedence.

    RFC 7644 §3.4.2.2: ``not`` over an unassigned attribute is true (SQL would make it NULL and drop
    the row), and ``and`` binds tighter than ``or``.
    """
    client = dataset.partner.client
    everyone = {u.id for u in dataset.users}
    untitled = {u.id for u in dataset.users if u.title is None}
    assert untitled
    for text in (
        'not (title eq "Engineer")',
        'not (title co "zzz")',
        'not (title gt "a")',
        'emails[not (type eq "zzz")]',
        'userName pr or title eq "x" and title eq "y"',
        'title eq "x" and title eq "y" or userName pr',
    ):
        expected = _oracle(UserModel, text, dataset.users)
        assert expected is not None
        got = _ids(client.get("/Users", params={"filter": text, "count": 1000}))
        assert got == expected, text
    assert untitled <= _ids(client.get("/Users", params={"filter": 'not (title eq "Engineer")', "count": 1000}))
    assert _ids(client.get("/Users", params={"filter": 'userName pr or title eq "x" and title eq "y"'})) == everyone


@pytest.mark.parametrize("value", [2**80, 2**63, 2**63 - 1, -(2**80), -(2**63)])
def test_extreme_integers_in_paging(dataset: DataSet, value: int) -> None:
    """startIndex/count beyond 64 bits are valid JSON and query text: a ListResponse, not an overflow."""
    client = dataset.partner.client
    for name in ("startIndex", "count"):
        for endpoint in ("/Users", "/Groups"):
            check(client.get(endpoint, params={name: str(value)}), listing=True)
        for endpoint in ("/Users/.search", "/Groups/.search", "/.search"):
            response = client.post(endpoint, json={"schemas": [SEARCH_REQUEST], name: value})
            body = check(response, listing=True)
            assert response.status_code == 200 and body is not None, response.text
            if name == "startIndex" and value > 0:
                assert body["startIndex"] == value and body["itemsPerPage"] == 0
