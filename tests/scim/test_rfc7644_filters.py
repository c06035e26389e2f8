"""RFC 7644 §3.4.2.2 filtering (standards §1.3, corpus E04/E05, N01-N03), over HTTP on both databases.

One read-only population per module and backend; each case names the users (or groups) it must
return, exactly. The refusals matter as much as the matches: a filter the server cannot evaluate
exactly is ``400 invalidFilter``, never a broader (or narrower) answer, because Entente decides
leavers from these queries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from tests.conftest import ENTERPRISE_SCHEMA, PartnerHandle, assert_scim_error
from tests.scim.replay import open_partner, send

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


@dataclass
class Population:
    partner: PartnerHandle
    ids: dict[str, str]
    """local name -> id, for users and groups."""
    meta: dict[str, dict[str, Any]]
    """local name -> the user's meta block as created."""

    def fill(self, text: str) -> str:
        """Replace {D}, {<name>} (an id) and {<name>.lastModified}-style tokens."""
        text = text.replace("{D}", self.partner.domain).replace("{DU}", self.partner.domain.upper())
        for name, resource_id in self.ids.items():
            text = text.replace("{" + name + "}", resource_id).replace("{" + name + "^}", resource_id.upper())
        for name, meta in self.meta.items():
            for key in ("created", "lastModified"):
                text = text.replace("{" + f"{name}.{key}" + "}", meta[key])
        return text

    def names(self, body: dict[str, Any]) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id[r["id"]] for r in body.get("Resources", [])}


@pytest.fixture(scope="module")
def people(app: FastAPI, engine: Engine) -> Iterator[Population]:
    for partner in open_partner(app, engine):
        d = partner.domain
        ids: dict[str, str] = {}
        meta: dict[str, dict[str, Any]] = {}

        def user(local: str, **body: Any) -> None:
            created = partner.create_user(local, **body)
            ids[local], meta[local] = created["id"], created["meta"]

        user(
            "alice",
            userName=f"alice@{d}",
            externalId="Ext-A",
            title="Engineer",
            nickName="50%_off",
            displayName="Alice Zed",
            name={"givenName": "Alice", "familyName": "Zed"},
            emails=[
                {"value": f"alice@{d}", "type": "work", "primary": True},
                {"value": f"alice.home@{d}", "type": "home"},
            ],
            phoneNumbers=[{"value": "+1 555 0100", "type": "work"}],
            **{
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_SCHEMA],
                ENTERPRISE_SCHEMA: {"employeeNumber": "701984", "department": "R&D"},
            },
        )
        user(
            "bob",
            userName=f"Bob@{d}",
            externalId="ext-b",
            title="Manager",
            nickName="Bobby",
            active=False,
            name={"givenName": "Bob", "familyName": "Young"},
            emails=[{"value": f"bob@{d}", "type": "work"}],
            **{
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_SCHEMA],
                ENTERPRISE_SCHEMA: {"employeeNumber": "42"},
            },
        )
        user(
            "carol",
            title="",
            name={"givenName": "Carol"},
            emails=[{"value": f"carol@{d}", "type": "home"}, {"value": f"carol.w@{d}", "type": "work"}],
        )
        user("dave", name={"familyName": "Adams"}, emails=[{"value": f"dave@{d}", "type": "work"}])
        user("erin", userName="erin", emails=None)
        for name, members in (("Engineering", ["alice", "carol"]), ("Ops", ["bob"]), ("Empty", [])):
            group = partner.create_group(name, members=[ids[m] for m in members])
            ids[name] = group["id"]
        nested = partner.create_group("Nested", members=[ids["Engineering"]])
        ids["Nested"] = nested["id"]
        response = partner.client.patch(
            f"/Groups/{ids['Engineering']}",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "value": {"externalId": "GRP-1"}}],
            },
        )
        assert response.status_code == 200, response.text
        yield Population(partner, ids, meta)


ALL = {"alice", "bob", "carol", "dave", "erin"}
USER_CASES: list[tuple[str, set[str]]] = [
    # attribute operators (RFC 7644 Table 3) on strings, caseExact false
    ('userName eq "alice@{D}"', {"alice"}),
    ('userName eq "ALICE@{DU}"', {"alice"}),
    ('userName eq "bob@{D}"', {"bob"}),  # stored as Bob@
    ('userName ne "alice@{D}"', ALL - {"alice"}),
    ('userName co "AR"', {"carol"}),
    ('userName sw "B"', {"bob"}),
    ('userName ew "@{D}"', ALL - {"erin"}),
    ("title pr", {"alice", "bob"}),  # carol's "" is not "present"
    ('title eq "engineer"', {"alice"}),
    ('nickName co "%"', {"alice"}),  # LIKE wildcards are literals
    ('nickName co "_"', {"alice"}),
    ('nickName sw "50%"', {"alice"}),
    ('name.familyName gt "Young"', {"alice"}),
    ('name.familyName ge "young"', {"alice", "bob"}),
    ('name.familyName lt "Young"', {"dave"}),
    ('name.familyName le "YOUNG"', {"bob", "dave"}),
    ("name pr", ALL - {"erin"}),
    # caseExact: externalId and id compare exactly
    ('externalId eq "Ext-A"', {"alice"}),
    ('externalId eq "ext-a"', set()),
    ('externalId sw "ext"', {"bob"}),  # SQLite's LIKE alone would also match Ext-A
    ('externalId co "xt-A"', {"alice"}),
    ('externalId co "XT-a"', set()),
    ('externalId ew "-B"', set()),
    ('externalId ew "-b"', {"bob"}),
    ('id eq "{alice}"', {"alice"}),
    ('id eq "{alice^}"', set()),
    # booleans
    ("active eq false", {"bob"}),
    ("active eq true", ALL - {"bob"}),
    ("active ne true", {"bob"}),
    # logical operators: not > and > or, grouping
    ('userName sw "alice" or userName sw "carol" and active eq false', {"alice"}),
    ('userName sw "carol" and active eq false or userName sw "alice"', {"alice"}),
    ('(userName sw "alice" or userName sw "carol") and active eq false', set()),
    ('(userName sw "alice" or userName sw "bob") and active eq false', {"bob"}),
    ('title pr and userName sw "bob" or title pr and userName sw "alice"', {"alice", "bob"}),
    ("not (active eq false) and title pr", {"alice"}),
    ('not (title pr) or userName sw "alice"', {"alice", "carol", "dave", "erin"}),
    ('not (userName sw "a" or userName sw "b")', {"carol", "dave", "erin"}),
    ('title eq "Engineer" and (nickName pr or userName sw "z")', {"alice"}),
    # complex attribute filters and multi-valued "any value" semantics
    ('emails[type eq "work" and value co "@{D}"]', ALL - {"erin"}),
    ('emails[type eq "home" and value sw "carol.w"]', set()),  # one value must satisfy both
    ('emails[type eq "home"] and emails[value sw "carol.w"]', {"carol"}),  # each filter: any value
    ('emails.type eq "home" and emails.value sw "carol.w"', {"carol"}),
    ('emails[type eq "work"].value eq "CAROL.W@{DU}"', {"carol"}),  # Entra's dotted form
    ('emails[type eq "work"].value eq "carol@{D}"', set()),  # carol@ is her home address
    ('emails.value eq "alice.home@{D}"', {"alice"}),
    ('emails co "ALICE"', {"alice"}),
    ("emails pr", ALL - {"erin"}),
    ("not (emails pr)", {"erin"}),
    ('not (emails.type eq "home")', {"bob", "dave", "erin"}),  # no value is home
    ('not (emails[type eq "home"])', {"bob", "dave", "erin"}),
    ('emails[not (type eq "work")]', {"alice", "carol"}),  # some value is not work
    ("emails[primary eq true]", {"alice"}),
    ('phoneNumbers[type eq "work" and value sw "+1"]', {"alice"}),
    # memberships
    ('groups.value eq "{Engineering}"', {"alice", "carol"}),
    ('groups eq "{Ops}"', {"bob"}),
    ('groups[display eq "OPS"]', {"bob"}),
    ("groups pr", {"alice", "bob", "carol"}),
    ("not (groups pr)", {"dave", "erin"}),
    # full URNs, core and enterprise extension; bare extension names
    ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob@{D}"', {"bob"}),
    ('urn:ietf:params:scim:schemas:core:2.0:User:name.familyName eq "zed"', {"alice"}),
    (f'{ENTERPRISE_SCHEMA}:employeeNumber eq "701984"', {"alice"}),
    (f"{ENTERPRISE_SCHEMA}:employeeNumber pr", {"alice", "bob"}),
    (f'{ENTERPRISE_SCHEMA.upper()}:DEPARTMENT eq "r&d"', {"alice"}),
    ('employeeNumber eq "42"', {"bob"}),
    # attribute names and operators are case-insensitive (literals are JSON: lower-case true/false)
    ('USERNAME EQ "alice@{D}"', {"alice"}),
    ('Username Eq "alice@{D}"', {"alice"}),
    ('Emails[TYPE eq "home"]', {"alice", "carol"}),
    ('NAME.FAMILYNAME eq "Zed"', {"alice"}),
    ('userName sw "a" AND title PR', {"alice"}),
    ('userName sw "alice" OR userName sw "bob"', {"alice", "bob"}),
    ("NOT (title pr)", {"carol", "dave", "erin"}),
    ("ACTIVE eq false", {"bob"}),
    # dateTime, compared chronologically, any offset
    ('meta.lastModified gt "{carol.lastModified}"', {"dave", "erin"}),
    ('meta.lastModified ge "{carol.lastModified}"', {"carol", "dave", "erin"}),
    ('meta.lastModified lt "{carol.lastModified}"', {"alice", "bob"}),
    ('meta.lastModified le "{carol.lastModified}"', {"alice", "bob", "carol"}),
    ('meta.lastModified eq "{carol.lastModified}"', {"carol"}),
    ('meta.created lt "{dave.created}"', {"alice", "bob", "carol"}),
    # no match is an empty 200, never 404
    ('userName eq "nobody@{D}"', set()),
]

GROUP_CASES: list[tuple[str, set[str]]] = [
    ('displayName eq "engineering"', {"Engineering"}),
    ('displayName sw "E"', {"Engineering", "Empty"}),
    ('externalId eq "GRP-1"', {"Engineering"}),
    ('externalId eq "grp-1"', set()),
    ('members.value eq "{alice}"', {"Engineering"}),
    ('members[value eq "{bob}"]', {"Ops"}),
    ('members eq "{carol}"', {"Engineering"}),
    ('members[type eq "Group"]', {"Nested"}),
    ('members.value eq "{Engineering}"', {"Nested"}),
    ("members pr", {"Engineering", "Ops", "Nested"}),
    ("not (members pr)", {"Empty"}),
    ('members.value eq "{alice}" or members.value eq "{bob}"', {"Engineering", "Ops"}),
    ('urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq "ops"', {"Ops"}),
    ('meta.created ge "{dave.created}"', {"Engineering", "Ops", "Empty", "Nested"}),
]

REFUSED: list[tuple[str, str]] = [
    # N01: an unknown attribute anywhere refuses the whole filter, so it can never widen
    ('titel eq "x"', "unknown attribute"),
    ('userName eq "alice@{D}" and titel eq "x"', "unknown attribute inside and"),
    ('titel eq "x" or userName eq "alice@{D}"', "unknown attribute inside or"),
    ('not (titel eq "x")', "unknown attribute under not"),
    ('emails[titel eq "x"]', "unknown sub-attribute in a value filter"),
    ('name.nickname eq "x"', "unknown sub-attribute"),
    (f'{ENTERPRISE_SCHEMA}:nope eq "x"', "unknown extension attribute"),
    ('urn:example:params:scim:schemas:extension:acme:2.0:User:badge eq "1"', "unknown schema"),
    ('members.value eq "x"', "a Group attribute on Users"),
    ('name eq "x"', "a complex attribute compared as a value"),
    # N02 and friends: operator not defined for the type
    ("active gt true", "gt on a boolean"),
    ("active le false", "le on a boolean"),
    ('meta.created co "2020"', "co on a dateTime"),
    # E05 and bad literals
    ("externalId eq jyoung", "unquoted string"),
    ('active eq "true"', "quoted boolean"),
    ("userName eq 12", "number for a string"),
    ("active eq FALSE", "JSON literals are lower-case"),
    ('meta.lastModified gt "yesterday"', "not a dateTime"),
    ('userName eq "bad\\q"', "invalid JSON escape"),
    # junk
    ("junk", "no operator"),
    ('userName xx "x"', "unknown operator"),
    ("userName eq", "missing value"),
    ('userName pr "x"', "pr takes no value"),
    ('(userName eq "x"', "unbalanced parenthesis"),
    ('userName eq "x")', "unbalanced parenthesis"),
    ('userName eq "x" and', "dangling and"),
    ('emails[type eq "work"', "unclosed bracket"),
    ('emails[type eq "work"].value', "value path without comparison"),
    ('"userName" eq "x"', "quoted attribute name"),
    (" ", "blank"),
]


@pytest.mark.parametrize(("text", "expected"), USER_CASES, ids=[c[0] for c in USER_CASES])
def test_user_filter(people: Population, text: str, expected: set[str]) -> None:
    response = people.partner.client.get("/Users", params={"filter": people.fill(text), "count": 50})
    assert response.status_code == 200, response.text
    body = response.json()
    assert people.names(body) == expected
    assert body["totalResults"] == len(expected)
    if not expected:
        assert "Resources" not in body or body["Resources"] == []


@pytest.mark.parametrize(("text", "expected"), GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_filter(people: Population, text: str, expected: set[str]) -> None:
    response = people.partner.client.get(
        "/Groups", params={"filter": people.fill(text), "excludedAttributes": "members"}
    )
    assert response.status_code == 200, response.text
    assert people.names(response.json()) == expected


@pytest.mark.parametrize(("text", "why"), REFUSED, ids=[c[1] + ": " + c[0] for c in REFUSED])
def test_refused_filter_is_invalid_filter(people: Population, text: str, why: str) -> None:
    response = people.partner.client.get("/Users", params={"filter": people.fill(text)})
    body = assert_scim_error(response, 400, "invalidFilter")
    assert "Resources" not in body


def test_refused_group_filter(people: Population) -> None:
    response = people.partner.client.get("/Groups", params={"filter": 'userName eq "x"'})
    assert_scim_error(response, 400, "invalidFilter")


def test_datetime_with_an_offset_compares_chronologically(people: Population) -> None:
    carol = dt.datetime.fromisoformat(people.meta["carol"]["lastModified"].replace("Z", "+00:00"))
    shifted = carol.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    assert not shifted.endswith("+00:00")
    body = people.partner.client.get("/Users", params={"filter": f'meta.lastModified ge "{shifted}"'}).json()
    assert people.names(body) == {"carol", "dave", "erin"}


def test_search_body_filters_like_the_query_string(people: Population) -> None:
    """POST /.search (RFC 7644 §3.4.3) keeps the filter out of URLs and logs; same answers."""
    for text, expected in USER_CASES[::3]:
        response = people.partner.client.post(
            "/Users/.search", json={"schemas": [SEARCH], "filter": people.fill(text), "count": 50}
        )
        assert response.status_code == 200, (text, response.text)
        assert people.names(response.json()) == expected, text
    refused = people.partner.client.post("/Users/.search", json={"schemas": [SEARCH], "filter": 'titel eq "x"'})
    assert_scim_error(refused, 400, "invalidFilter")


def test_e04_e05_replayed(people: Population) -> None:
    send(people.partner.client, "entra-E04-get_user_by_work_email_dotted", domain=people.partner.domain)
    assert_scim_error(send(people.partner.client, "entra-E05-unquoted_filter_value"), 400, "invalidFilter")


def test_n01_n02_replayed(people: Population) -> None:
    for name in ("rfc7644-3.4.2.2-filter_unknown_attribute_N01", "rfc7644-3.4.2.2-filter_gt_boolean_N02"):
        assert_scim_error(send(people.partner.client, name), 400, "invalidFilter")


def test_n03_27_or_clauses_are_evaluated_exactly(people: Population) -> None:
    """scim2-filter-parser's own transpiler dies with IndexError at 27 placeholders; ours must answer."""
    names = ["alice", "bob"] + [f"ghost{i}" for i in range(25)]
    text = " or ".join(f'userName eq "{n}@{people.partner.domain}"' for n in names)
    response = people.partner.client.get("/Users", params={"filter": text})
    assert response.status_code == 200, response.text
    assert people.names(response.json()) == {"alice", "bob"}


def test_very_long_or_chain_is_refused(people: Population) -> None:
    text = " or ".join(f'userName eq "u{i}"' for i in range(80))
    assert_scim_error(people.partner.client.get("/Users", params={"filter": text}), 400, "invalidFilter")


@pytest.mark.parametrize("depth", [600, 1300])
def test_deep_nesting_is_refused_not_a_crash(people: Population, depth: int) -> None:
    text = "(" * depth + 'userName eq "x"' + ")" * depth
    assert len(text) < 4096  # within the length limit: the depth itself must be refused
    assert_scim_error(people.partner.client.get("/Users", params={"filter": text}), 400, "invalidFilter")
    negated = "not (" * (depth // 3) + 'userName eq "x"' + ")" * (depth // 3)
    assert_scim_error(people.partner.client.get("/Users", params={"filter": negated}), 400, "invalidFilter")


def test_overlong_filter_is_refused(people: Population) -> None:
    text = 'userName eq "' + "x" * 5000 + '"'
    assert_scim_error(people.partner.client.get("/Users", params={"filter": text}), 400, "invalidFilter")


def test_empty_filter_parameter_is_refused(people: Population) -> None:
    assert_scim_error(people.partner.client.get("/Users?filter="), 400, "invalidFilter")


def test_filter_never_crosses_partners(people: Population, partner: PartnerHandle) -> None:
    """The same filter from another partner sees only its own users (N10 for queries)."""
    partner.create_user("alice")
    body = partner.client.get("/Users", params={"filter": 'userName sw "alice"'}).json()
    assert body["totalResults"] == 1
    assert body["Resources"][0]["id"] not in people.ids.values()
    query = {"filter": f'members.value eq "{people.ids["alice"]}"'}
    groups = partner.client.get("/Groups", params=query).json()
    assert groups["totalResults"] == 0
