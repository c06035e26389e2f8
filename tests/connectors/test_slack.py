"""Slack connector: the contract against a stateful fake of Slack's documented SCIM 2.0 and Web API shapes.

``FakeSlack`` is a respx router whose side effects keep users and IdP groups in memory and answer as
Slack documents (docs.slack.dev: SCIM 2.0 API reference, SCIM rate limits, ``admin.users.session.reset``):
``DELETE`` deactivates, ``userName`` is rewritten into a Slack-style name, a second account with a
taken email is refused with 409, and the Web API answers HTTP 200 ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.base import (
    AccountRef,
    AccountSpec,
    Connector,
    CredentialsError,
    Outcome,
    RejectedError,
    Result,
    RetryableError,
    UnsupportedError,
)
from connectors.slack import SlackConnector, SlackConnectorConfig
from tests.connectors.conformance import ConnectorContract, find_account

SCIM = "https://api.slack.com/scim/v2"
RESET = "https://slack.com/api/admin.users.session.reset"
SCIM_TOKEN = "xoxp-scim-token"  # noqa: S105 - test value
ADMIN_TOKEN = "xoxp-admin-token"  # noqa: S105 - test value
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
FILTER = re.compile(r'^externalId eq "((?:[^"\\]|\\.)*)"$')


def scim_error(status: int, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"schemas": [ERROR_SCHEMA], "detail": detail, "status": str(status)})


class FakeSlack:
    """Slack's SCIM 2.0 users/groups and ``admin.users.session.reset``, in memory, as respx side effects."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {
            "S0ENG": {"id": "S0ENG", "displayName": "eng", "members": []},
            "S0OPS": {"id": "S0OPS", "displayName": "ops", "members": []},
        }
        self.resets: list[str] = []
        self.router = respx.MockRouter(assert_all_called=False)
        self.router.get(f"{SCIM}/Users").mock(side_effect=self.list_users)
        self.router.post(f"{SCIM}/Users").mock(side_effect=self.create_user)
        self.router.route(url__regex=rf"^{re.escape(SCIM)}/Users/(?P<uid>[^/?]+)$").mock(side_effect=self.one_user)
        self.router.patch(url__regex=rf"^{re.escape(SCIM)}/Groups/(?P<gid>[^/?]+)$").mock(side_effect=self.patch_group)
        self.router.post(RESET).mock(side_effect=self.session_reset)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.router.async_handler)

    @staticmethod
    def _authorized(request: httpx.Request, token: str) -> bool:
        return bool(request.headers.get("Authorization") == f"Bearer {token}")

    def render(self, user: dict[str, Any]) -> dict[str, Any]:
        groups = [
            {"value": g["id"], "display": g["displayName"]} for g in self.groups.values() if user["id"] in g["members"]
        ]
        return {**user, "groups": groups, "meta": {"resourceType": "User"}}

    def list_users(self, request: httpx.Request) -> httpx.Response:
        if not self._authorized(request, SCIM_TOKEN):
            return scim_error(401, "invalid_authentication")
        users = list(self.users.values())
        if "filter" in request.url.params:
            match = FILTER.match(request.url.params["filter"])
            if match is None:
                return scim_error(400, "unsupported filter")
            wanted = json.loads(f'"{match.group(1)}"')
            users = [u for u in users if u.get("externalId") == wanted]
        start = int(request.url.params.get("startIndex", "1"))
        count = int(request.url.params.get("count", "100"))
        page = users[start - 1 : start - 1 + count]
        return httpx.Response(
            200,
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": len(users),
                "itemsPerPage": len(page),
                "startIndex": start,
                "Resources": [self.render(u) for u in page],
            },
        )

    def _taken(self, user_id: str | None, email: str | None, user_name: str | None) -> bool:
        for other in self.users.values():
            if other["id"] == user_id:
                continue
            if email and other["emails"][0]["value"].lower() == email.lower():
                return True
            if user_name and other["userName"] == user_name:
                return True
        return False

    def create_user(self, request: httpx.Request) -> httpx.Response:
        if not self._authorized(request, SCIM_TOKEN):
            return scim_error(401, "invalid_authentication")
        body = json.loads(request.content)
        if not body.get("emails"):
            return scim_error(400, "missing_email")
        user_name = re.sub(r"[^a-z0-9._-]", "", body["userName"].split("@")[0].lower())[:21]  # Slack-style name
        email = body["emails"][0]["value"]
        if self._taken(None, email, user_name):
            return scim_error(409, "email_taken or username_taken")
        user_id = "W" + uuid.uuid4().hex[:10].upper()
        self.users[user_id] = {
            "schemas": [body["schemas"][0]],
            "id": user_id,
            "externalId": body.get("externalId"),
            "userName": user_name,
            "displayName": body.get("displayName", ""),
            "name": {"givenName": "", "familyName": "", **body.get("name", {})},
            "emails": [{"value": email, "primary": True}],
            "active": body.get("active", True),
        }
        return httpx.Response(201, json=self.render(self.users[user_id]))

    def one_user(self, request: httpx.Request, uid: str) -> httpx.Response:
        if not self._authorized(request, SCIM_TOKEN):
            return scim_error(401, "invalid_authentication")
        user = self.users.get(uid)
        if user is None:
            return scim_error(404, "user_not_found")
        if request.method == "GET":
            return httpx.Response(200, json=self.render(user))
        if request.method == "DELETE":
            user["active"] = False  # Slack: "Sets a Slack user to deactivated"
            return httpx.Response(204)
        if request.method != "PATCH":
            return scim_error(405, "method not allowed")
        changed = dict(user, name=dict(user["name"]))
        for op in json.loads(request.content)["Operations"]:
            path, value = op["path"], op.get("value")
            if op["op"] != "replace":
                return scim_error(400, f"unsupported op {op['op']}")
            if path in ("active", "displayName", "externalId"):
                changed[path] = value
            elif path in ("name.givenName", "name.familyName"):
                changed["name"][path.split(".")[1]] = value
            elif path == "emails":
                changed["emails"] = [{"value": value[0]["value"], "primary": True}]
            else:
                return scim_error(400, f"unsupported path {path}")
        if self._taken(uid, changed["emails"][0]["value"], None):
            return scim_error(409, "email_taken")
        self.users[uid] = changed
        return httpx.Response(200, json=self.render(changed))

    def patch_group(self, request: httpx.Request, gid: str) -> httpx.Response:
        if not self._authorized(request, SCIM_TOKEN):
            return scim_error(401, "invalid_authentication")
        group = self.groups.get(gid)
        if group is None:
            return scim_error(404, "group_not_found")
        for op in json.loads(request.content)["Operations"]:
            if op["op"] == "add" and op["path"] == "members":
                group["members"].extend(m["value"] for m in op["value"] if m["value"] not in group["members"])
            elif op["op"] == "remove" and (match := re.fullmatch(r'members\[value eq "([^"]+)"\]', op["path"])):
                group["members"] = [m for m in group["members"] if m != match.group(1)]
            else:
                return scim_error(400, f"unsupported group operation {op}")
        return httpx.Response(204)

    def session_reset(self, request: httpx.Request) -> httpx.Response:
        if not self._authorized(request, ADMIN_TOKEN):
            return httpx.Response(200, json={"ok": False, "error": "invalid_auth"})
        user_id = json.loads(request.content).get("user_id")
        if user_id not in self.users:
            return httpx.Response(200, json={"ok": False, "error": "user_not_found"})
        self.resets.append(user_id)
        return httpx.Response(200, json={"ok": True})


def config(**changes: Any) -> SlackConnectorConfig:
    values: dict[str, Any] = {"scim_token": SecretStr(SCIM_TOKEN), "admin_token": SecretStr(ADMIN_TOKEN)}
    values.update(changes)
    return SlackConnectorConfig(**values)


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack()


@pytest.fixture
async def slack(fake: FakeSlack) -> AsyncIterator[SlackConnector]:
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        opened = config(page_size=2).open(http)
        yield opened
        await opened.aclose()


class TestSlackContract(ConnectorContract):
    """The shared contract against the stateful fake; Slack refuses a second account with a taken email."""

    allows_duplicate_email = False

    @pytest.fixture
    async def connector(self, slack: SlackConnector) -> AsyncIterator[Connector]:
        yield slack


def person(local: str, **changes: Any) -> AccountSpec:
    values: dict[str, Any] = {
        "user_name": f"{local}@example.test",
        "email": f"{local}@example.test",
        "display_name": f"Person {local}",
        "given_name": "Person",
        "family_name": local,
    }
    values.update(changes)
    return AccountSpec(**values)


@pytest.mark.anyio
async def test_create_shape_and_external_id(slack: SlackConnector, fake: FakeSlack) -> None:
    """The user is created with externalId = subject id; a Slack-rewritten userName does not cause churn."""
    result = await slack.update(AccountRef("t", "subj-1"), person("Ada.Lovelace"), op_id="op-1")
    assert result.outcome is Outcome.CHANGED and result.remote_id
    user = fake.users[result.remote_id]
    assert (user["externalId"], user["userName"], user["emails"][0]["value"]) == (
        "subj-1",
        "ada.lovelace",
        "Ada.Lovelace@example.test",
    )
    again = await slack.update(AccountRef("t", "subj-1"), person("Ada.Lovelace"), op_id="op-2")
    assert again == Result(Outcome.UNCHANGED, result.remote_id)


@pytest.mark.anyio
async def test_email_is_never_used_to_find(slack: SlackConnector, fake: FakeSlack) -> None:
    """An account made outside Entente with the same email is not adopted: Slack refuses the duplicate."""
    fake.users["WMANUAL"] = {
        "schemas": [],
        "id": "WMANUAL",
        "externalId": None,
        "userName": "manual",
        "displayName": "Manual",
        "name": {},
        "emails": [{"value": "grace@example.test", "primary": True}],
        "active": True,
    }
    with pytest.raises(RejectedError, match="409"):
        await slack.update(AccountRef("t", "subj-grace"), person("grace"), op_id="op")
    assert fake.users["WMANUAL"]["externalId"] is None


@pytest.mark.anyio
async def test_groups_follow_spec(slack: SlackConnector, fake: FakeSlack) -> None:
    """spec.groups (Slack IdP group ids) is the desired membership: added, then moved, then unchanged."""
    ref = AccountRef("t", "subj-g")
    created = await slack.update(ref, person("g", groups=frozenset({"S0ENG"})), op_id="op-1")
    uid = created.remote_id
    assert fake.groups["S0ENG"]["members"] == [uid]
    moved = await slack.update(ref, person("g", groups=frozenset({"S0OPS"})), op_id="op-2")
    assert moved == Result(Outcome.CHANGED, uid)
    assert (fake.groups["S0ENG"]["members"], fake.groups["S0OPS"]["members"]) == ([], [uid])
    same = await slack.update(ref, person("g", groups=frozenset({"S0OPS"})), op_id="op-3")
    assert same.outcome is Outcome.UNCHANGED
    listed = await find_account(slack, subject_id="subj-g", remote_id=None)
    assert listed is not None and listed.groups == frozenset({"S0OPS"})


@pytest.mark.anyio
async def test_revoke_calls_session_reset_for_active_users_only(slack: SlackConnector, fake: FakeSlack) -> None:
    """Active: reset (CHANGED). Deactivated: nothing to end (UNCHANGED), no call."""
    ref = AccountRef("t", "subj-r")
    uid = (await slack.update(ref, person("r"), op_id="op-1")).remote_id
    assert await slack.revoke_sessions(ref, op_id="op-2") == Result(Outcome.CHANGED, uid)
    assert fake.resets == [uid]
    await slack.suspend(ref, op_id="op-3")
    assert await slack.revoke_sessions(ref, op_id="op-4") == Result(Outcome.UNCHANGED, uid)
    assert fake.resets == [uid]


@pytest.mark.anyio
async def test_deprovision_after_suspend_is_unchanged(slack: SlackConnector, fake: FakeSlack) -> None:
    """Slack deactivation is both suspension and deprovisioning: a suspended user is already so."""
    ref = AccountRef("t", "subj-d")
    uid = (await slack.update(ref, person("d"), op_id="op-1")).remote_id
    assert (await slack.suspend(ref, op_id="op-2")).outcome is Outcome.CHANGED
    assert await slack.deprovision(ref, op_id="op-3") == Result(Outcome.UNCHANGED, uid)


@pytest.mark.anyio
async def test_listing_pages_with_start_index(slack: SlackConnector, fake: FakeSlack) -> None:
    """Page size 2 and five users: every user is listed once, deactivated ones as inactive."""
    made = {}
    for n in range(5):
        made[f"subj-{n}"] = (await slack.update(AccountRef("t", f"subj-{n}"), person(f"p{n}"), op_id="op")).remote_id
    await slack.deprovision(AccountRef("t", "subj-4"), op_id="op")
    listed = [a async for a in slack.list_accounts()]
    assert {a.subject_id: a.remote_id for a in listed} == made
    assert [a.active for a in listed] == [True, True, True, True, False]
    starts = [c.request.url.params["startIndex"] for c in fake.router.calls if c.request.url.params.get("count")]
    assert starts[-3:] == ["1", "3", "5"]


@pytest.mark.anyio
async def test_missing_email_is_rejected_before_calling(slack: SlackConnector, fake: FakeSlack) -> None:
    with pytest.raises(RejectedError, match="email"):
        await slack.update(AccountRef("t", "subj-x"), person("x", email=None), op_id="op")
    assert fake.users == {}


async def _slack_on(router: respx.MockRouter) -> tuple[httpx.AsyncClient, SlackConnector]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return http, config().open(http)


ALICE = {"id": "WALICE", "externalId": "subj-a", "userName": "alice", "active": True, "emails": []}


def with_alice() -> respx.MockRouter:
    """A router where subject ``subj-a`` is the active Slack user ``WALICE``."""
    router = respx.MockRouter()
    router.get(f"{SCIM}/Users").mock(return_value=httpx.Response(200, json={"totalResults": 1, "Resources": [ALICE]}))
    return router


@pytest.mark.anyio
async def test_scim_429_retry_after() -> None:
    """Slack SCIM rate limit: HTTP 429 with Retry-After."""
    router = respx.MockRouter()
    router.get(f"{SCIM}/Users").mock(return_value=httpx.Response(429, headers={"Retry-After": "30"}))
    http, slack = await _slack_on(router)
    async with http:
        with pytest.raises(RetryableError) as caught:
            await slack.suspend(AccountRef("t", "subj-a"), op_id="op")
    assert caught.value.retry_after == 30.0


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "error"), [(401, CredentialsError), (403, CredentialsError), (503, RetryableError)])
async def test_scim_status_mapping(status: int, error: type[Exception]) -> None:
    router = respx.MockRouter()
    router.get(f"{SCIM}/Users").mock(return_value=scim_error(status, "nope"))
    http, slack = await _slack_on(router)
    async with http:
        with pytest.raises(error):
            await slack.update(AccountRef("t", "subj-a"), person("a"), op_id="op")


@pytest.mark.anyio
async def test_scim_timeout_is_retryable() -> None:
    router = respx.MockRouter()
    router.get(f"{SCIM}/Users").mock(side_effect=httpx.ReadTimeout("slow"))
    http, slack = await _slack_on(router)
    async with http:
        with pytest.raises(RetryableError, match="timed out"):
            await slack.deprovision(AccountRef("t", "subj-a"), op_id="op")


@pytest.mark.anyio
async def test_session_reset_ratelimited_429() -> None:
    """Web API rate limit: HTTP 429, Retry-After, body ``{"ok": false, "error": "ratelimited"}``."""
    router = with_alice()
    router.post(RESET).mock(
        return_value=httpx.Response(429, headers={"Retry-After": "12"}, json={"ok": False, "error": "ratelimited"})
    )
    http, slack = await _slack_on(router)
    async with http:
        with pytest.raises(RetryableError) as caught:
            await slack.revoke_sessions(AccountRef("t", "subj-a"), op_id="op")
    assert caught.value.retry_after == 12.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("ratelimited", RetryableError),
        ("internal_error", RetryableError),
        ("invalid_auth", CredentialsError),
        ("not_authed", CredentialsError),
        ("token_revoked", CredentialsError),
        ("missing_scope", CredentialsError),
        ("feature_not_enabled", UnsupportedError),
        ("cannot_reset_primary_owner", RejectedError),
        ("cannot_reset_bot", RejectedError),
    ],
)
async def test_session_reset_ok_false(code: str, error: type[Exception]) -> None:
    """HTTP 200 ``ok: false``: the error code decides, never the status."""
    router = with_alice()
    router.post(RESET).mock(return_value=httpx.Response(200, json={"ok": False, "error": code}))
    http, slack = await _slack_on(router)
    async with http:
        with pytest.raises(error, match=code):
            await slack.revoke_sessions(AccountRef("t", "subj-a"), op_id="op")


@pytest.mark.anyio
async def test_session_reset_user_not_found_is_unchanged() -> None:
    router = with_alice()
    router.post(RESET).mock(return_value=httpx.Response(200, json={"ok": False, "error": "user_not_found"}))
    http, slack = await _slack_on(router)
    async with http:
        result = await slack.revoke_sessions(AccountRef("t", "subj-a"), op_id="op")
    assert result == Result(Outcome.UNCHANGED, "WALICE")


@pytest.mark.anyio
async def test_session_reset_request_shape() -> None:
    """POST with the admin (not the SCIM) token and ``user_id``; HTTP 401 is a credentials problem."""
    router = with_alice()
    reset = router.post(RESET).mock(return_value=httpx.Response(401))
    http, slack = await _slack_on(router)
    async with http:
        with pytest.raises(CredentialsError):
            await slack.revoke_sessions(AccountRef("t", "subj-a"), op_id="op")
    request = reset.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert json.loads(request.content) == {"user_id": "WALICE"}
    lookup = router.calls[0].request
    assert lookup.headers["Authorization"] == f"Bearer {SCIM_TOKEN}"
    assert lookup.url.params["filter"] == 'externalId eq "subj-a"'


@pytest.mark.anyio
async def test_remote_id_of_another_subject_is_rejected() -> None:
    """A stored Slack id that now carries another externalId is never acted on."""
    router = respx.MockRouter()
    router.get(f"{SCIM}/Users/WALICE").mock(return_value=httpx.Response(200, json=ALICE))
    http, slack = await _slack_on(router)
    async with http:
        with pytest.raises(RejectedError, match="another subject"):
            await slack.suspend(AccountRef("t", "subj-b", "WALICE"), op_id="op")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("ref", "groups"),
    [(AccountRef("t", "subj-a", "../Groups/S0ENG"), frozenset()), (AccountRef("t", "subj-a"), frozenset({"S0/../x"}))],
)
async def test_ids_that_are_no_slack_ids_never_reach_a_path(
    slack: SlackConnector, fake: FakeSlack, ref: AccountRef, groups: frozenset[str]
) -> None:
    with pytest.raises(RejectedError, match="not a Slack id"):
        await slack.update(ref, person("a", groups=groups), op_id="op")
    assert fake.users == {}
