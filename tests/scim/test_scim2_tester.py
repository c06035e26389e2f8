"""scim2-tester 0.5.2 (python-scim's RFC 7643/7644 compliance checker) against Entente as a real process.

``check_server`` runs once per database backend, with nothing filtered out, over plain HTTP to
``entente serve`` (``tests/peers/entente_process.py``); each tag's checks are then a test of their
own, so a failure names the area (``patch:add``, ``crud:read:attributes``, ...). Every result must be
SUCCESS, COMPLIANT or ACCEPTABLE, or SKIPPED for a reason listed below (there are none).

The partner is warn-only (``entente partner add --warn-only``): scim2-tester fills emails with random
``<uuid>@<uuid>.com`` addresses that can never lie in a domain the partner verified.

Expected SKIPPED reasons: none. scim2-tester 0.5.2 skips a check only when

- tags were filtered ("Skipped due to tag filtering/exclusion"): we run every check;
- the ServiceProviderConfig says PATCH is unsupported: we support PATCH and say so;
- a model has no addable/removable/replaceable/filterable attribute: User and Group have many;
- ``POST /.search`` answers 501: we serve root search (RFC 7644 §3.4.3).

So any SKIPPED result is a regression, and ``EXPECTED_SKIP_REASONS`` is empty.

Two behaviours scim2-tester exercises are worth pinning with their own tests below:

1. ``patch:remove`` on User ``active``: the attribute becomes unassigned in the representation
   (RFC 7644 §3.5.2.2), while the *effective* state that lifecycle consumers act on stays what it
   was, so no operation can reactivate a leaver by omission (``broker/scim/resources.py``,
   ``user_columns``).
2. ``patch:add`` / ``patch:replace`` on Group ``members``: ``display`` is stored as sent (Entra asks
   servers to store values as sent) and, when a client sends none, rendered from the member's
   current ``displayName`` (else ``userName``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import CheckResult, Status, check_server, get_all_available_tags

from tests.conftest import GROUP_SCHEMA, PATCH_SCHEMA, USER_SCHEMA
from tests.peers.entente_process import EntenteProcess

pytestmark = pytest.mark.peer

PASSING = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}
EXPECTED_SKIP_REASONS: dict[str, str] = {}
"""reason -> why it is expected; empty: see the module docstring."""
TAGS = get_all_available_tags()
MIN_CHECKS = 130
"""scim2-tester 0.5.2 runs 135 checks on User (with the enterprise extension) and Group; fewer means
discovery broke and the resource checks never ran."""


def _show(results: list[CheckResult]) -> str:
    return "\n".join(
        f"- {r.status.name} {r.resource_type or '-'} {r.title}: {r.reason}\n  data={r.data!r}" for r in results
    )


@pytest.fixture(scope="module")
def tester_results(entente_process: EntenteProcess) -> list[CheckResult]:
    """One full check_server run against the process (it cleans up what it creates)."""
    headers = {"Authorization": f"Bearer {entente_process.token}"}
    with Client(base_url=entente_process.base_url, headers=headers, timeout=30.0) as http:
        results = check_server(SyncSCIMClient(http), raise_exceptions=False)
    entente_process.assert_alive()
    return results


@pytest.fixture(scope="module")
def scim(entente_process: EntenteProcess) -> Iterator[httpx.Client]:
    """A plain HTTP client on the process, for the tests pinning the deliberate deviations.

    Same partner as scim2-tester: the resources made here have unique names, and the checks never
    list a partner's whole population.
    """
    with httpx.Client(
        base_url=entente_process.base_url,
        headers={"Authorization": f"Bearer {entente_process.token}"},
        timeout=30.0,
    ) as client:
        yield client


def test_every_check_ran(tester_results: list[CheckResult]) -> None:
    counts = Counter(r.status.name for r in tester_results)
    assert len(tester_results) >= MIN_CHECKS, f"{len(tester_results)} checks ran: {dict(counts)}\n" + _show(
        [r for r in tester_results if r.status not in PASSING]
    )
    untagged = [r for r in tester_results if not r.tags & set(TAGS)]
    assert not untagged, _show(untagged)


@pytest.mark.parametrize("tag", TAGS)
def test_checks_of_tag_pass(tag: str, tester_results: list[CheckResult]) -> None:
    """Every check carrying this tag passes, or is a documented skip."""
    of_tag = [r for r in tester_results if tag in r.tags]
    assert of_tag, f"no scim2-tester check with tag {tag!r} ran"
    failures = [
        r
        for r in of_tag
        if r.status not in PASSING and not (r.status == Status.SKIPPED and r.reason in EXPECTED_SKIP_REASONS)
    ]
    assert not failures, f"{len(failures)} of {len(of_tag)} '{tag}' checks failed:\n" + _show(failures)


def test_skips_are_documented(tester_results: list[CheckResult]) -> None:
    skipped = [r for r in tester_results if r.status == Status.SKIPPED]
    undocumented = [r for r in skipped if r.reason not in EXPECTED_SKIP_REASONS]
    assert not undocumented, _show(undocumented)


def test_nothing_fails(tester_results: list[CheckResult]) -> None:
    failing = [r for r in tester_results if r.status not in PASSING | {Status.SKIPPED}]
    assert not failing, _show(failing)


def _user(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    name = f"u{uuid.uuid4().hex[:8]}@example.org"
    response = client.post("/Users", json={"schemas": [USER_SCHEMA], "userName": name, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("active", [True, False])
def test_remove_active_keeps_the_effective_state(scim: httpx.Client, active: bool) -> None:
    """`remove active` unassigns the attribute but can neither revive a leaver nor drop anyone."""
    user = _user(scim, active=active)
    response = scim.patch(
        f"/Users/{user['id']}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "remove", "path": "active"}]},
    )
    assert response.status_code == 200, response.text
    assert "active" not in response.json()
    found = scim.get("/Users", params={"filter": f'id eq "{user["id"]}" and active eq {str(active).lower()}'})
    assert found.json()["totalResults"] == 1


@pytest.mark.parametrize("op", ["add", "replace"])
def test_member_display_is_kept_as_sent_else_the_members_name(scim: httpx.Client, op: str) -> None:
    named = _user(scim, displayName="Ada Lovelace")
    unnamed = _user(scim)
    group = scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": f"g-{uuid.uuid4().hex[:8]}"})
    assert group.status_code == 201, group.text
    value = [{"value": named["id"], "display": "sent by the client"}, {"value": unnamed["id"]}]
    response = scim.patch(
        f"/Groups/{group.json()['id']}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": op, "path": "members", "value": value}]},
    )
    assert response.status_code == 200, response.text
    displays = {m["value"]: m["display"] for m in response.json()["members"]}
    assert displays == {named["id"]: "sent by the client", unnamed["id"]: unnamed["userName"]}
    rename = {"op": "replace", "path": "displayName", "value": "Ann Other"}
    renamed = scim.patch(f"/Users/{unnamed['id']}", json={"schemas": [PATCH_SCHEMA], "Operations": [rename]})
    assert renamed.status_code == 200, renamed.text
    members = scim.get(f"/Groups/{group.json()['id']}").json()["members"]
    assert {m["value"]: m["display"] for m in members}[unnamed["id"]] == "Ann Other"


def test_schemas_publish_member_display_as_read_write(scim: httpx.Client) -> None:
    """Clients negotiate from /Schemas (RFC 7643 §7): display is stored as sent, so readWrite."""
    schema = scim.get(f"/Schemas/{GROUP_SCHEMA}").json()
    members = next(a for a in schema["attributes"] if a["name"] == "members")
    display = next(s for s in members["subAttributes"] if s["name"] == "display")
    assert display["mutability"] == "readWrite"
