"""GitHub connector: the contract against a stateful fake of GitHub's documented REST shapes, plus rate limits.

``FakeGitHub`` keeps org members, pending invitations and team memberships in memory as respx side
effects shaped like docs.github.com/en/rest (orgs/members, teams/members, pagination, rate limits):
membership answers carry ``state``/``role``/``user.login``, lists are JSON arrays paged with a
``Link`` header, removing a member drops their team memberships, and requests without the API
version, media type or bearer token are refused.

The whole contract runs; three capability flags state the documented GitHub facts it honours (see
``connectors/github.py``): GitHub keeps no id of ours (``subject_id`` is ``None`` in listings), Entente
does not own a GitHub user's display name (the managed change is the team set), and suspension
removes the org membership (GitHub has no per-org suspension), so a suspended member is not listed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr, ValidationError

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
from connectors.github import GitHubConnector, GitHubConnectorConfig
from tests.connectors.conformance import ConnectorContract, find_account

API = "https://api.github.com"
ORG = "acme"
TOKEN = "ghp_test_token"  # noqa: S105 - test value
TEAMS = frozenset({"eng", "ops"})


def gh_error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)}
    return httpx.Response(status, json=body, headers=headers)


class FakeGitHub:
    """One org's memberships, invitations and teams, answering as GitHub's REST API documents."""

    def __init__(self, *, auto_accept: bool = True, page_cap: int = 100) -> None:
        self.auto_accept = auto_accept
        """True: invitees accept at once (as existing members would be added); False: they stay pending."""
        self.page_cap = page_cap
        self.members: dict[str, dict[str, str]] = {}  # lower login -> {"login", "role"}
        self.invitations: dict[str, dict[str, Any]] = {}  # lower login -> invitation
        self.teams: dict[str, dict[str, str]] = {slug: {} for slug in TEAMS}  # slug -> lower login -> state
        self.spelling: dict[str, str] = {}  # lower login -> GitHub's spelling, for users made elsewhere
        self.unknown: set[str] = set()
        self.router = respx.MockRouter(base_url=API, assert_all_called=False)
        self.router.route(path__regex=rf"^/orgs/{ORG}/memberships/(?P<login>[^/]+)$").mock(side_effect=self.membership)
        self.router.get(path=f"/orgs/{ORG}/members").mock(side_effect=self.list_members)
        self.router.get(path=f"/orgs/{ORG}/invitations").mock(side_effect=self.list_invitations)
        self.router.route(path__regex=rf"^/orgs/{ORG}/teams/(?P<slug>[^/]+)/memberships/(?P<login>[^/]+)$").mock(
            side_effect=self.team_membership
        )
        self.router.get(path__regex=rf"^/orgs/{ORG}/teams/(?P<slug>[^/]+)/members$").mock(side_effect=self.team_members)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.router.async_handler)

    @staticmethod
    def refused(request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return gh_error(401, "Bad credentials")
        if request.headers.get("X-GitHub-Api-Version") != "2022-11-28":
            return gh_error(400, "missing or unsupported API version")
        if request.headers.get("Accept") != "application/vnd.github+json":
            return gh_error(415, "unsupported media type")
        return None

    def page(self, request: httpx.Request, items: list[dict[str, Any]]) -> httpx.Response:
        """One page of ``items`` with GitHub's ``Link`` header (per_page capped by ``page_cap``)."""
        number = int(request.url.params.get("page", "1"))
        size = min(int(request.url.params.get("per_page", "30")), self.page_cap)
        chunk = items[(number - 1) * size : number * size]
        headers = {}
        if number * size < len(items):
            last = (len(items) + size - 1) // size
            links = [f'<{request.url.copy_set_param("page", str(number + 1))}>; rel="next"']
            links.append(f'<{request.url.copy_set_param("page", str(last))}>; rel="last"')
            headers["Link"] = ", ".join(links)
        return httpx.Response(200, json=chunk, headers=headers)

    def _membership_body(self, key: str) -> dict[str, Any]:
        if key in self.members:
            member = self.members[key]
            state, role, login = "active", member["role"], member["login"]
        else:
            invitation = self.invitations[key]
            state, login = "pending", invitation["login"]
            role = "admin" if invitation["role"] == "admin" else "member"
        return {
            "url": f"{API}/orgs/{ORG}/memberships/{login}",
            "state": state,
            "role": role,
            "organization": {"login": ORG},
            "user": {"login": login, "type": "User"},
        }

    def membership(self, request: httpx.Request, login: str) -> httpx.Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        key = login.lower()
        known = key in self.members or key in self.invitations
        if request.method == "GET":
            return httpx.Response(200, json=self._membership_body(key)) if known else gh_error(404, "Not Found")
        if request.method == "DELETE":
            if not known:
                return gh_error(404, "Not Found")
            self.members.pop(key, None)
            self.invitations.pop(key, None)
            for members in self.teams.values():  # leaving the org leaves its teams
                members.pop(key, None)
            return httpx.Response(204)
        if request.method != "PUT":
            return gh_error(405, "Method Not Allowed")
        if key in self.unknown:
            return gh_error(404, "Not Found")
        role = json.loads(request.content or b"{}").get("role", "member")
        if role not in ("admin", "member"):
            return gh_error(422, "Validation Failed")
        spelled = self.spelling.get(key, login)
        if key in self.members or self.auto_accept:
            self.invitations.pop(key, None)
            self.members[key] = {"login": spelled, "role": role}
        else:
            self.invitations[key] = {
                "id": len(self.invitations) + 1,
                "login": spelled,
                "email": None,
                "role": "admin" if role == "admin" else "direct_member",
            }
        return httpx.Response(200, json=self._membership_body(key))

    def list_members(self, request: httpx.Request) -> httpx.Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        role = request.url.params.get("role", "all")
        chosen = [m for m in self.members.values() if role == "all" or m["role"] == role]
        return self.page(request, [{"login": m["login"], "id": 1, "type": "User"} for m in chosen])

    def list_invitations(self, request: httpx.Request) -> httpx.Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        return self.page(request, list(self.invitations.values()))

    def team_membership(self, request: httpx.Request, slug: str, login: str) -> httpx.Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        team = self.teams.get(slug)
        if team is None:
            return gh_error(404, "Not Found")
        key = login.lower()
        if request.method == "GET":
            if key not in team:
                return gh_error(404, "Not Found")
            return httpx.Response(200, json={"url": str(request.url), "role": "member", "state": team[key]})
        if request.method == "DELETE":
            if key not in team:
                return gh_error(404, "Not Found")
            del team[key]
            return httpx.Response(204)
        if key not in self.members and key not in self.invitations:
            return gh_error(422, "the user must be invited to the organization first (fake shortcut)")
        team[key] = "active" if key in self.members else "pending"
        return httpx.Response(200, json={"url": str(request.url), "role": "member", "state": team[key]})

    def team_members(self, request: httpx.Request, slug: str) -> httpx.Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        team = self.teams.get(slug, {})
        active = [self.members[k]["login"] for k, state in team.items() if state == "active" and k in self.members]
        return self.page(request, [{"login": login} for login in active])


def config(**changes: Any) -> GitHubConnectorConfig:
    values: dict[str, Any] = {"org": ORG, "token": SecretStr(TOKEN), "managed_teams": TEAMS}
    values.update(changes)
    return GitHubConnectorConfig(**values)


@pytest.fixture
def fake() -> FakeGitHub:
    return FakeGitHub(page_cap=2)


@pytest.fixture
async def github(fake: FakeGitHub) -> AsyncIterator[GitHubConnector]:
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        opened = config().open(http)
        yield opened
        await opened.aclose()


class TestGitHubContract(ConnectorContract):
    """The shared contract on the fake; the flags state each GitHub difference."""

    supports_revoke_sessions = False
    stores_subject_id = False
    has_display_name = False
    suspended_accounts_listed = False

    @pytest.fixture
    async def connector(self, github: GitHubConnector) -> AsyncIterator[Connector]:
        yield github

    def make_spec(self, n: int) -> AccountSpec:
        """The default person, plus a GitHub login and the ``eng`` team."""
        return dataclasses.replace(
            super().make_spec(n), groups=frozenset({"eng"}), attributes={"github_login": f"gh-{self.run_id}-{n}"}
        )

    def changed_spec(self, spec: AccountSpec) -> AccountSpec:
        """GitHub profiles are the person's own, so the managed change is the team set."""
        return dataclasses.replace(spec, groups=frozenset({"ops"}))


def person(login: str, **changes: Any) -> AccountSpec:
    values: dict[str, Any] = {
        "user_name": login,
        "email": f"{login}@example.test",
        "display_name": login,
        "attributes": {"github_login": login},
    }
    values.update(changes)
    return AccountSpec(**values)


@pytest.mark.anyio
async def test_role_admin_and_back(github: GitHubConnector, fake: FakeGitHub) -> None:
    """``admin`` in spec.roles makes an org owner; without it the person is a plain member again."""
    ref = AccountRef("t", "subj-1")
    created = await github.update(ref, person("octo", roles=frozenset({"admin"})), op_id="op-1")
    assert created == Result(Outcome.CHANGED, "octo") and fake.members["octo"]["role"] == "admin"
    listed = await find_account(github, subject_id="-", remote_id="octo")
    assert listed is not None and listed.roles == frozenset({"admin"})
    demoted = await github.update(ref, person("octo"), op_id="op-2")
    assert demoted.outcome is Outcome.CHANGED and fake.members["octo"]["role"] == "member"


@pytest.mark.anyio
async def test_listing_shows_role_and_teams_after_reinstatement(github: GitHubConnector) -> None:
    """A member is listed with org role and managed teams; suspension drops both, update grants them again."""
    ref = AccountRef("t", "subj-1")
    spec = person("octo", groups=frozenset({"eng"}))
    assert await github.update(ref, spec, op_id="op-1") == Result(Outcome.CHANGED, "octo")
    listed = await find_account(github, subject_id="-", remote_id="octo")
    assert listed is not None and (listed.roles, listed.groups) == (frozenset({"member"}), frozenset({"eng"}))
    assert (await github.suspend(AccountRef("t", "subj-1", "octo"), op_id="op-2")).outcome is Outcome.CHANGED
    assert await find_account(github, subject_id="-", remote_id="octo") is None
    assert await github.update(ref, spec, op_id="op-3") == Result(Outcome.CHANGED, "octo")
    listed = await find_account(github, subject_id="-", remote_id="octo")
    assert listed is not None and (listed.active, listed.groups) == (True, frozenset({"eng"}))


@pytest.mark.anyio
async def test_remote_id_is_githubs_spelling(github: GitHubConnector, fake: FakeGitHub) -> None:
    """Logins are case-insensitive; the remote id is the login as GitHub spells it."""
    fake.spelling["octocat"] = "OctoCat"
    result = await github.update(AccountRef("t", "s"), person("octocat"), op_id="op")
    assert result == Result(Outcome.CHANGED, "OctoCat")


@pytest.mark.anyio
async def test_pending_invitation_is_listed_inactive(fake: FakeGitHub) -> None:
    """An invitee who has not accepted: granted (UNCHANGED on repeat), listed inactive, cancellable."""
    fake.auto_accept = False
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        github = config().open(http)
        ref = AccountRef("t", "subj-p")
        first = await github.update(ref, person("newbie", groups=frozenset({"eng"})), op_id="op-1")
        assert first == Result(Outcome.CHANGED, "newbie")
        assert fake.teams["eng"] == {"newbie": "pending"}
        again = await github.update(ref, person("newbie", groups=frozenset({"eng"})), op_id="op-2")
        assert again.outcome is Outcome.UNCHANGED
        listed = await find_account(github, subject_id="-", remote_id="newbie")
        assert listed is not None and listed.active is False
        assert (await github.deprovision(AccountRef("t", "subj-p", "newbie"), op_id="op-3")).outcome is Outcome.CHANGED
        assert fake.invitations == {}


@pytest.mark.anyio
async def test_teams_outside_managed_teams_are_rejected(github: GitHubConnector, fake: FakeGitHub) -> None:
    with pytest.raises(RejectedError, match="managed_teams"):
        await github.update(AccountRef("t", "s"), person("octo", groups=frozenset({"admins"})), op_id="op")
    assert fake.members == {}


@pytest.mark.anyio
@pytest.mark.parametrize("attributes", [{}, {"github_login": "not a login"}, {"github_login": "-leading"}])
async def test_missing_or_bad_login_is_rejected(github: GitHubConnector, attributes: dict[str, str]) -> None:
    with pytest.raises(RejectedError):
        await github.update(AccountRef("t", "s"), person("x", attributes=attributes), op_id="op")


@pytest.mark.anyio
async def test_unknown_github_user_is_rejected(github: GitHubConnector, fake: FakeGitHub) -> None:
    fake.unknown.add("nobody-here")
    with pytest.raises(RejectedError, match="404"):
        await github.update(AccountRef("t", "s"), person("nobody-here"), op_id="op")


@pytest.mark.anyio
async def test_inactive_spec_removes(github: GitHubConnector, fake: FakeGitHub) -> None:
    ref = AccountRef("t", "s")
    await github.update(ref, person("octo"), op_id="op-1")
    assert await github.update(ref, person("octo", active=False), op_id="op-2") == Result(Outcome.CHANGED, "octo")
    assert fake.members == {}


@pytest.mark.anyio
async def test_revoke_is_unsupported(github: GitHubConnector) -> None:
    with pytest.raises(UnsupportedError, match="Enterprise Managed Users"):
        await github.revoke_sessions(AccountRef("t", "s", "octo"), op_id="op")


@pytest.mark.anyio
async def test_listing_follows_link_next(github: GitHubConnector, fake: FakeGitHub) -> None:
    """Pages of two: five members and their teams all come back through ``rel="next"``."""
    for n in range(5):
        await github.update(AccountRef("t", f"s{n}"), person(f"user{n}", groups=frozenset({"ops"})), op_id="op")
    listed = [a async for a in github.list_accounts()]
    assert [a.remote_id for a in listed] == [f"user{n}" for n in range(5)]
    assert all(a.groups == frozenset({"ops"}) and a.subject_id is None for a in listed)
    pages = [c.request.url.params.get("page") for c in fake.router.calls if c.request.url.path.endswith("/members")]
    assert pages[-3:] == [None, "2", "3"]


def respx_github() -> tuple[respx.MockRouter, httpx.AsyncClient, GitHubConnector]:
    router = respx.MockRouter(base_url=API)
    http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return router, http, config(managed_teams=frozenset()).open(http)


@pytest.mark.anyio
async def test_delete_404_is_unchanged() -> None:
    router, http, github = respx_github()
    router.delete(f"/orgs/{ORG}/memberships/octo").mock(return_value=gh_error(404, "Not Found"))
    async with http:
        assert await github.deprovision(AccountRef("t", "s", "octo"), op_id="op") == Result(Outcome.UNCHANGED, "octo")


@pytest.mark.anyio
async def test_link_pagination_with_absolute_urls() -> None:
    """GitHub's Link header carries absolute URLs; the last page has no ``next``."""
    router, http, github = respx_github()
    second = f"{API}/organizations/42/members?per_page=100&page=2"
    router.get(f"/orgs/{ORG}/members", params={"role": "admin"}).mock(return_value=httpx.Response(200, json=[]))
    router.get("/organizations/42/members").mock(return_value=httpx.Response(200, json=[{"login": "b"}]))
    router.get(f"/orgs/{ORG}/members").mock(
        return_value=httpx.Response(
            200, json=[{"login": "a"}], headers={"Link": f'<{second}>; rel="next", <{second}>; rel="last"'}
        )
    )
    router.get(f"/orgs/{ORG}/invitations").mock(return_value=httpx.Response(200, json=[{"login": None, "email": "x"}]))
    async with http:
        assert [a.remote_id async for a in github.list_accounts()] == ["a", "b"]


async def _suspend_answered(response: httpx.Response | Exception) -> Result:
    router, http, github = respx_github()
    route = router.delete(f"/orgs/{ORG}/memberships/octo")
    if isinstance(response, Exception):
        route.mock(side_effect=response)
    else:
        route.mock(return_value=response)
    async with http:
        return await github.suspend(AccountRef("t", "s", "octo"), op_id="op")


@pytest.mark.anyio
@pytest.mark.parametrize("status", [403, 429])
async def test_primary_rate_limit_waits_until_reset(status: int) -> None:
    """Primary limit: 403 or 429 with ``x-ratelimit-remaining: 0``; wait until ``x-ratelimit-reset``."""
    reset = int(time.time()) + 120
    headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    with pytest.raises(RetryableError, match="primary") as caught:
        await _suspend_answered(gh_error(status, "API rate limit exceeded for user ID 1.", headers))
    assert caught.value.retry_after is not None and 110 <= caught.value.retry_after <= 120


@pytest.mark.anyio
async def test_secondary_rate_limit_with_retry_after() -> None:
    """Secondary limit: 403 with ``retry-after`` seconds (and remaining quota left)."""
    headers = {"retry-after": "30", "x-ratelimit-remaining": "4000"}
    with pytest.raises(RetryableError) as caught:
        await _suspend_answered(gh_error(403, "You have exceeded a secondary rate limit.", headers))
    assert caught.value.retry_after == 30.0


@pytest.mark.anyio
async def test_secondary_rate_limit_without_headers_waits_a_minute() -> None:
    with pytest.raises(RetryableError, match="secondary") as caught:
        await _suspend_answered(gh_error(403, "You have exceeded a secondary rate limit. Please wait a few minutes."))
    assert caught.value.retry_after == 60.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "error"),
    [
        (gh_error(403, "Must have admin rights to the organization."), CredentialsError),
        (gh_error(401, "Bad credentials"), CredentialsError),
        (gh_error(422, "Validation Failed"), RejectedError),
        (gh_error(502, "Server Error"), RetryableError),
    ],
)
async def test_status_mapping(response: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error):
        await _suspend_answered(response)


@pytest.mark.anyio
async def test_timeout_is_retryable() -> None:
    with pytest.raises(RetryableError, match="timed out"):
        await _suspend_answered(httpx.ConnectTimeout("slow"))


@pytest.mark.anyio
async def test_stored_remote_id_must_be_a_login() -> None:
    """A malformed stored login never reaches a URL path."""
    _, http, github = respx_github()
    async with http:
        with pytest.raises(RejectedError):
            await github.deprovision(AccountRef("t", "s", "../../repos"), op_id="op")


def test_managed_teams_are_validated_at_load() -> None:
    with pytest.raises(ValidationError):
        config(managed_teams=frozenset({"eng/../x"}))


@pytest.mark.anyio
async def test_request_headers() -> None:
    """The documented media type, API version and bearer token on every call."""
    router, http, github = respx_github()
    route = router.delete(f"/orgs/{ORG}/memberships/octo").mock(return_value=httpx.Response(204))
    async with http:
        assert await github.suspend(AccountRef("t", "s", "octo"), op_id="op") == Result(Outcome.CHANGED, "octo")
    headers = route.calls.last.request.headers
    assert (headers["Accept"], headers["X-GitHub-Api-Version"], headers["Authorization"]) == (
        "application/vnd.github+json",
        "2022-11-28",
        f"Bearer {TOKEN}",
    )
