"""Differential test of RFC 7644 §3.4.2 (filter, sort, pagination): Entente against scim2-server.

The same 30 users (case variants, accents, LIKE wildcards, missing names, emails and titles,
absent ``active``, enterprise attributes) are loaded into ``scim2-server`` (PyPI, run as a process,
``tests/peers/scim2_server_process.py``) and into Entente (``entente serve``, one enforcing partner
per database backend), then every case below is asked of both over HTTP and the answers compared:

- filters: ``totalResults`` and the set of userNames (unsorted order is not defined by the RFC, and
  scim2-server orders unsorted results by random ids);
- sorted queries: the sequence of sort values (RFC 7644 §3.4.2.3 leaves the order of equal values
  open, and the two break ties differently: insertion order here, resource id there), and the set
  of userNames when the query is not paged;
- refusals: the HTTP status, and ``invalidFilter`` on both when the oracle says ``invalidFilter``.
  Bad ``sortBy``/``sortOrder`` values have no scimType in the RFC: scim2-server says ``invalidPath``
  or ``invalidValue``, we say ``invalidValue``; only the 400 is compared.

userNames are compared by local part: each server's users live in its own domain (the partner's
verified ``<slug>.example.com`` for Entente, ``oracle.example.com`` for scim2-server); filters are
templates rendered with each server's domain.

Where the two legitimately differ, ``DIFFERENCES`` names the case, says why with the RFC section,
checks that they still differ (so the note cannot go stale) and asserts Entente's answer exactly:

- D1 ``active`` absent on create is stored as ``true`` here (RFC 7643 §4.1.1: the meaning of
  ``active`` is the service provider's; a pushed user without it is a joiner), unassigned there.
- D2 an unqualified extension attribute (``employeeNumber``) resolves to the enterprise extension
  here, is refused there (RFC 7644 §3.10: clients SHOULD qualify extension attributes; nothing
  forbids a server resolving an unambiguous short name).
- D3 ``emails ne "x"``: a multi-valued attribute matches when one of its values does (RFC 7644
  §3.4.2.2), so a user without emails has no value that is "not x" and does not match here;
  scim2-server matches users without emails.
- D4 ``co``/``sw``/``ew`` on a dateTime: RFC 7644 §3.4.2.2 defines them as substring tests on
  strings and orders dateTimes chronologically; we refuse with ``400 invalidFilter`` rather than
  answer an undefined question, scim2-server answers an empty list.
- D5 ``gt``/``ge``/``lt``/``le`` against ``null``: null has no order (RFC 7644 §3.4.2.2); ``400
  invalidFilter`` here, an empty list there.
- D6 ``sortOrder=DESCENDING``: we read the value case-insensitively, as RFC 7644 §3.4.2 reads
  attribute names and operators; scim2-server accepts only the lower-case spelling (400).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from scim2_models import EnterpriseUser, SearchRequest, User

from tests.conftest import ENTERPRISE_SCHEMA, USER_SCHEMA
from tests.peers.entente_process import EntenteProcess
from tests.peers.scim2_server_process import Scim2Server, running_scim2_server

pytestmark = pytest.mark.peer

E = ENTERPRISE_SCHEMA
ORACLE_DOMAIN = "oracle.example.com"
UserModel = User[EnterpriseUser]


def _user(
    local: str,
    d: str,
    *,
    emails: list[tuple[str, str | None, bool]] | None = None,
    enterprise: dict[str, str] | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    """A User body; ``emails`` are (local part, type, primary), always in the server's domain."""
    body: dict[str, Any] = {"schemas": [USER_SCHEMA], "userName": f"{local}@{d}", **attributes}
    if emails:
        body["emails"] = [
            {
                "value": f"{value}@{d}",
                **({"type": kind} if kind else {}),
                **({"primary": True} if primary else {}),
            }
            for value, kind, primary in emails
        ]
    if enterprise:
        body["schemas"].append(E)
        body[E] = enterprise
    return body


def dataset(d: str) -> list[dict[str, Any]]:
    """The 30 users, rendered for domain ``d``; the same data, in the same order, on both servers."""
    return [
        _user(
            "alice",
            d,
            name={"givenName": "Alice", "familyName": "Archer"},
            active=True,
            externalId="A-1",
            title="Boss",
            emails=[("alice", "work", True), ("alice.home", "home", False)],
            enterprise={"employeeNumber": "100", "department": "Sales"},
        ),
        _user(
            "bob",
            d,
            name={"familyName": "baker"},
            active=False,
            externalId="a-1",
            emails=[("bob", "work", False)],
        ),
        _user("carol", d, name={"givenName": "Carol"}, title="boss", emails=[("carol.home", "home", True)]),
        _user("dave_%", d, title="50% off", active=True),
        _user("Émile", d, name={"familyName": "Émond"}, active=True, enterprise={"employeeNumber": "20"}),
        _user(
            "frank",
            d,
            name={"givenName": "Frank", "familyName": "Archer"},
            active=False,
            externalId="F-9",
            title="Engineer",
            emails=[("frank", "work", True)],
        ),
        _user(
            "grace",
            d,
            name={"familyName": "hopper"},
            title="engineer",
            emails=[("grace", "work", True), ("grace.other", None, False)],
        ),
        _user("heidi", d, enterprise={"department": "Sales"}),
        _user("ivan", d, name={"familyName": "Ivanov"}, externalId="ivan", emails=[("IVAN", "work", True)]),
        _user(
            "judy",
            d,
            name={"familyName": "Archer"},
            active=False,
            title="Boss",
            emails=[("judy", "work", False)],
        ),
        _user("ken_", d, name={"familyName": "ken"}, title="a_b", emails=[("ken", "home", False)]),
        _user("leo", d, name={"givenName": "Léo", "familyName": "Lé"}, externalId="L", active=True),
        _user(
            "mallory",
            d,
            active=False,
            title="Boss",
            emails=[("mallory", "work", True)],
            enterprise={"employeeNumber": "300", "department": "sales"},
        ),
        _user("niaj", d, emails=[("niaj.a", "work", False), ("niaj.b", "work", True)]),
        _user("olivia", d, name={"familyName": "O'Brien"}, title="Engineer", emails=[("olivia", "work", True)]),
        _user("peggy", d, name={"familyName": "peggy"}, emails=[("peggy", "home", False)]),
        _user("quinn", d, active=True, externalId="Q", enterprise={"employeeNumber": "9"}),
        _user("rupert", d, name={"familyName": "Zed"}),
        _user("sybil", d, name={"familyName": "archer"}, title="BOSS", emails=[("sybil", "work", True)]),
        _user(
            "trent",
            d,
            name={"familyName": "Trent"},
            enterprise={"department": "Engineering", "employeeNumber": "1000"},
        ),
        _user("ursula", d, active=False),
        _user("victor", d, name={"familyName": "Victor"}, title="50%", emails=[("victor", "work", True)]),
        _user("walter", d, name={"familyName": "White"}, externalId="W-1", emails=[("walter", "work", True)]),
        _user("xena", d, name={"givenName": "Xena", "familyName": "Warrior"}, active=True, title="engineer"),
        _user("yvonne", d, name={"familyName": "Young"}, emails=[("yvonne", "work", False)]),
        _user("zoë", d, name={"familyName": "Zoë"}, emails=[("zoe", "work", True)]),
        _user("Aaron", d, name={"familyName": "aaron"}, emails=[("aaron", "work", True)]),
        _user("BETTY", d, name={"familyName": "Boop"}, active=False),
        _user("charlie.x", d, title="%", emails=[("charlie", "other", True)]),
        _user("delta-1", d, name={"familyName": "Delta"}, externalId="D-1"),
    ]


LOCALS = [u["userName"].split("@")[0] for u in dataset(ORACLE_DOMAIN)]
BODIES = dict(zip(LOCALS, dataset(ORACLE_DOMAIN), strict=True))

FILTERS = [
    'userName eq "ALICE@{d}"',
    'userName eq "émile@{d}"',
    'userName sw "a"',
    'userName sw "dave_"',
    'userName co "%"',
    'userName co "_"',
    'userName ew "e@{d}"',
    'userName gt "m"',
    'userName le "carol@{d}"',
    'userName lt "b"',
    'USERNAME sw "c"',
    'userName SW "c"',
    'urn:ietf:params:scim:schemas:core:2.0:User:userName sw "b"',
    'externalId eq "a-1"',
    'externalId eq "A-1"',
    'externalId sw "a"',
    "externalId pr",
    "not (externalId pr)",
    'title eq "boss"',
    'title ne "Boss"',
    'not (title eq "Boss")',
    'title co "%"',
    'title co "_"',
    'title sw "50"',
    "title eq null",
    "title ne null",
    "title pr",
    'title lt "c"',
    "active eq false",
    "active ne false",
    "name pr",
    "name.givenName pr",
    "not (name.familyName pr)",
    'name.familyName eq "ARCHER"',
    'name.familyName sw "é"',
    'name.familyName gt "t"',
    'not (name.familyName sw "a")',
    'name.givenName gt "a"',
    "emails pr",
    "not (emails pr)",
    'emails co "HOME"',
    'emails.type eq "work"',
    "emails.type pr",
    "emails.primary eq true",
    'emails eq "ivan@{d}"',
    'emails[type eq "work" and value sw "a"]',
    'emails[type eq "home" and primary eq true]',
    'emails[not (type eq "work")]',
    "emails[type pr]",
    'emails[type eq "work"].value eq "grace@{d}"',
    'emails[value ew "@{d}"]',
    'emails[value ne "ivan@{d}"]',
    f'{E}:employeeNumber eq "100"',
    f'{E}:employeeNumber gt "10"',
    f'{E}:department eq "sales"',
    f'not ({E}:department eq "Sales")',
    f"{E}:department pr",
    'title eq "Boss" or userName sw "b" and active eq false',
    '(title eq "Boss" or userName sw "b") and active eq false',
    "not (active eq false or title pr)",
    'title eq "Engineer" and not (name.familyName eq "hopper")',
    'meta.created gt "2000-01-01T00:00:00Z"',
    'meta.lastModified lt "2000-01-01T00:00:00Z"',
    'titel eq "x"',
    "active gt true",
    "userName eq",
    "externalId eq jyoung",
    'emails[type eq "work"',
    # documented differences
    "active eq true",
    "not (active eq true)",
    "active pr",
    'employeeNumber eq "100"',
    'emails ne "ivan@{d}"',
    'meta.created co "20"',
    "title gt null",
]

SORTS: list[dict[str, Any]] = [
    {"sortBy": "userName"},
    {"sortBy": "userName", "sortOrder": "descending"},
    {"sortBy": "userName", "sortOrder": "descending", "startIndex": 5, "count": 7},
    {"sortBy": "userName", "startIndex": 29, "count": 5},
    {"sortBy": "USERNAME", "count": 4},
    {"sortBy": "name.familyName"},
    {"sortBy": "name.familyName", "sortOrder": "descending"},
    {"sortBy": "name.familyName", "startIndex": 3, "count": 10},
    {"sortBy": "name.givenName"},
    {"sortBy": "title"},
    {"sortBy": "title", "sortOrder": "descending"},
    {"sortBy": "emails"},
    {"sortBy": "emails", "sortOrder": "descending"},
    {"sortBy": "emails.value"},
    {"sortBy": "externalId"},
    {"sortBy": "externalId", "sortOrder": "descending"},
    {"sortBy": f"{E}:employeeNumber"},
    {"sortBy": f"{E}:employeeNumber", "sortOrder": "descending"},
    {"sortBy": f"{E}:department"},
    {"sortBy": "meta.created"},
    {"filter": "title pr", "sortBy": "title", "sortOrder": "descending", "startIndex": 2, "count": 3},
    {"filter": 'userName co "e"', "sortBy": "name.familyName", "count": 5},
    {"startIndex": 0, "count": 2},
    {"startIndex": 29, "count": 5},
    {"count": 0},
    {"count": -1},
    {"startIndex": 31},
    {"startIndex": -3, "count": 1},
    {"count": "x"},
    {"sortBy": "name"},
    {"sortBy": "nosuch"},
    {"sortBy": "userName", "sortOrder": "sideways"},
    # documented differences
    {"sortBy": "active"},
    {"sortBy": "employeeNumber"},
    {"sortBy": "userName", "sortOrder": "DESCENDING"},
]


@dataclass(frozen=True)
class Answer:
    """What one server said to one query, with userNames reduced to their local part."""

    status: int
    scim_type: str | None = None
    total: int | None = None
    items_per_page: int | None = None
    locals: tuple[str, ...] = ()


def ask(client: httpx.Client, domain: str, params: dict[str, Any]) -> Answer:
    rendered = {k: (v.replace("{d}", domain) if isinstance(v, str) else v) for k, v in params.items()}
    response = client.get("/Users", params=rendered)
    body = response.json()
    if response.status_code != 200:
        return Answer(response.status_code, body.get("scimType"))
    resources = body.get("Resources", [])
    return Answer(
        200,
        None,
        body["totalResults"],
        body.get("itemsPerPage"),
        tuple(r["userName"].split("@")[0] for r in resources),
    )


def sort_values(params: dict[str, Any], locals_: tuple[str, ...], sort_by: str | None = None) -> list[Any]:
    """RFC 7644 §3.4.2.3 sort values of these users, computed by scim2-models from the dataset."""
    request: SearchRequest[Any] = SearchRequest(sort_by=sort_by or params["sortBy"])
    return [request.sort_value(UserModel.model_validate(BODIES[name])) for name in locals_]


def paged(params: dict[str, Any]) -> bool:
    return "count" in params or "startIndex" in params


@dataclass(frozen=True)
class Difference:
    why: str
    entente: Callable[[Answer], None]
    """Asserts Entente's answer exactly."""


def _users_where(predicate: Callable[[dict[str, Any]], bool]) -> set[str]:
    return {name for name, body in BODIES.items() if predicate(body)}


def _expect_set(expected: set[str]) -> Callable[[Answer], None]:
    def check(answer: Answer) -> None:
        assert answer.status == 200 and answer.total == len(expected), answer
        assert set(answer.locals) == expected, sorted(set(answer.locals) ^ expected)

    return check


def _expect_invalid_filter(answer: Answer) -> None:
    assert (answer.status, answer.scim_type) == (400, "invalidFilter"), answer


def _expect_sorted(key: Callable[[dict[str, Any]], Any], descending: bool) -> Callable[[Answer], None]:
    """Every user, ordered by ``key``, unassigned (None) last when ascending and first when descending."""

    def check(answer: Answer) -> None:
        assert answer.status == 200 and set(answer.locals) == set(LOCALS), answer
        values = [key(BODIES[name]) for name in answer.locals]
        ranked = [(v is None, v) for v in values]
        assert ranked == sorted(ranked, reverse=descending), list(zip(answer.locals, values, strict=True))

    return check


def _emails(body: dict[str, Any]) -> list[str]:
    return [e["value"].split("@")[0].lower() for e in body.get("emails", [])]


def _enterprise(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda body: (body.get(E) or {}).get(name)


D1 = "D1: absent active is stored as true"
D2 = "D2: unqualified extension attribute"
DIFFERENCES: dict[str, Difference] = {
    "filter=active eq true": Difference(D1, _expect_set(_users_where(lambda b: b.get("active", True)))),
    "filter=not (active eq true)": Difference(D1, _expect_set(_users_where(lambda b: not b.get("active", True)))),
    "filter=active pr": Difference(D1, _expect_set(set(LOCALS))),
    "sortBy=active": Difference(D1, _expect_sorted(lambda b: b.get("active", True), descending=False)),
    'filter=employeeNumber eq "100"': Difference(
        D2, _expect_set(_users_where(lambda b: _enterprise("employeeNumber")(b) == "100"))
    ),
    "sortBy=employeeNumber": Difference(D2, _expect_sorted(_enterprise("employeeNumber"), descending=False)),
    'filter=emails ne "ivan@{d}"': Difference(
        "D3: a user without emails has no value that is 'ne'",
        _expect_set(_users_where(lambda b: any(e != "ivan" for e in _emails(b)))),
    ),
    'filter=meta.created co "20"': Difference("D4: substring operators on dateTime", _expect_invalid_filter),
    "filter=title gt null": Difference("D5: ordering against null", _expect_invalid_filter),
    "sortBy=userName&sortOrder=DESCENDING": Difference(
        "D6: sortOrder read case-insensitively",
        _expect_sorted(lambda b: b["userName"].lower(), descending=True),
    ),
}


def case_id(params: dict[str, Any]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


CASES = [{"filter": f} for f in FILTERS] + SORTS


@pytest.fixture(scope="module")
def oracle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scim2Server]:
    """A scim2-server of the oracle's own: the shared one also holds workspace tests' provisioned users."""
    with running_scim2_server(tmp_path_factory.mktemp("scim2-oracle")) as server:
        yield server


@pytest.fixture(scope="module")
def oracle(oracle_server: Scim2Server) -> Iterator[httpx.Client]:
    """scim2-server loaded with the dataset once per module (it is not per database backend)."""
    with httpx.Client(
        base_url=oracle_server.base_url,
        timeout=30.0,
        headers={"Authorization": f"Bearer {oracle_server.token}"},
    ) as client:
        for body in dataset(ORACLE_DOMAIN):
            response = client.post("/Users", json=body)
            assert response.status_code == 201, response.text
        yield client
    oracle_server.assert_alive()


@pytest.fixture(scope="module")
def entente(entente_process: EntenteProcess) -> Iterator[tuple[httpx.Client, str]]:
    """A fresh enforcing partner on the running Entente, loaded with the same dataset in its domain."""
    partner = entente_process.add_partner(prefix="oracle", warn_only=False, tld="example.com")
    with httpx.Client(
        base_url=entente_process.base_url, timeout=30.0, headers={"Authorization": f"Bearer {partner.token}"}
    ) as client:
        for body in dataset(partner.domain):
            response = client.post("/Users", json=body)
            assert response.status_code == 201, response.text
        yield client, partner.domain
    entente_process.assert_alive()


def test_every_difference_names_a_case() -> None:
    assert set(DIFFERENCES) <= {case_id(c) for c in CASES}


@pytest.mark.parametrize("params", CASES, ids=case_id)
def test_same_answer_as_scim2_server(
    params: dict[str, Any], oracle: httpx.Client, entente: tuple[httpx.Client, str]
) -> None:
    client, domain = entente
    ours = ask(client, domain, params)
    theirs = ask(oracle, ORACLE_DOMAIN, params)
    difference = DIFFERENCES.get(case_id(params))
    if difference is not None:
        assert ours != theirs, f"documented difference ({difference.why}) no longer holds: both said {ours}"
        difference.entente(ours)
        return
    if theirs.status != 200 or ours.status != 200:
        assert ours.status == theirs.status, f"Entente {ours} / scim2-server {theirs}"
        if theirs.scim_type == "invalidFilter":
            assert ours.scim_type == "invalidFilter", ours
        return
    assert (ours.total, ours.items_per_page) == (theirs.total, theirs.items_per_page), (ours, theirs)
    if params.get("sortBy"):
        ours_sorted, theirs_sorted = sort_values(params, ours.locals), sort_values(params, theirs.locals)
        assert ours_sorted == theirs_sorted, (ours.locals, theirs.locals)
        if not paged(params):
            assert sorted(ours.locals) == sorted(theirs.locals)
    elif not paged(params):
        assert sorted(ours.locals) == sorted(theirs.locals), sorted(set(ours.locals) ^ set(theirs.locals))
