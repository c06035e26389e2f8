"""GitHub organisation and team membership through the GitHub REST API (version 2022-11-28).

Vendor documents relied on (https://docs.github.com/en/rest):

- Organization members (``/orgs/members``): ``GET``/``PUT``/``DELETE /orgs/{org}/memberships/{username}``
  (``PUT {"role": "admin" | "member"}`` adds an existing member or sends an invitation, answered with
  ``{"state": "active" | "pending", "role", "user": {"login"}}``; ``DELETE`` removes a member or
  cancels an invitation: 204, 404 when neither), ``GET /orgs/{org}/members?role=&per_page=`` (max
  100 per page) and ``GET /orgs/{org}/invitations``.
- Team members (``/teams/members``): ``GET``/``PUT``/``DELETE
  /orgs/{org}/teams/{team_slug}/memberships/{username}`` and ``GET /orgs/{org}/teams/{team_slug}/members``.
  Teams synchronised with an IdP refuse API changes.
- Using pagination (``Link`` header, ``rel="next"``) and API versions (``X-GitHub-Api-Version``).
- Rate limits for the REST API / troubleshooting: a primary limit answers 403 or 429 with
  ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` (UTC epoch seconds); a secondary limit
  answers 403 or 429 with a message saying so and maybe ``retry-after`` (seconds); without either
  header, "wait for at least one minute". All of those are ``RetryableError``; any other 403 means our
  token is not an org owner or lacks ``admin:org`` (``CredentialsError``).

Mapping to the connector interface (GitHub accounts belong to the person, not to us; we grant
membership of one organisation):

- The login comes from ``spec.attributes[login_attribute]`` (default ``github_login``);
  ``AccountRef.remote_id`` is that login as GitHub spells it. GitHub stores nothing of ours, so
  ``list_accounts`` reports ``subject_id=None``: reconciliation matches GitHub accounts by login.
- ``update`` sets the org role (``admin`` if ``spec.roles`` has ``admin``, else ``member``) and makes
  membership of the configured ``managed_teams`` equal to ``spec.groups`` (team slugs; a slug outside
  ``managed_teams`` is ``RejectedError``, and teams Entente does not manage are never touched). Names and
  emails are the person's own on GitHub and are not managed.
- ``suspend`` = ``deprovision`` = remove the org membership (or cancel the pending invitation). GitHub has
  no per-organisation suspension outside Enterprise Managed Users, and a leaver must lose access; GitHub
  keeps a removed member's org access settings for three months and offers to reinstate them when
  ``update`` invites the person again.
- ``revoke_sessions`` is ``UnsupportedError``: GitHub has no API to end another user's sessions
  unless the org uses Enterprise Managed Users; removing membership is the engine's fallback.
- A pending invitation is listed with ``active=False`` (the person has no access until they accept).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx
from pydantic import Field, HttpUrl, SecretStr, field_validator

from connectors.base import (
    AccountRef,
    AccountSpec,
    ConnectorConfig,
    ConnectorError,
    NameSet,
    Outcome,
    RejectedError,
    RemoteAccount,
    Result,
    RetryableError,
    UnsupportedError,
    error_for_response,
    mapping_or_empty,
    parse_retry_after,
)
from connectors.http import HttpApi, bearer

__all__ = ["GitHubConnectorConfig", "GitHubConnector", "github_error"]

API_VERSION = "2022-11-28"
PER_PAGE = 100
SECONDARY_LIMIT_WAIT = 60.0
"""GitHub: with neither ``retry-after`` nor an exhausted primary limit, "wait for at least one minute"."""
LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
"""A GitHub username: up to 39 alphanumerics or single inner hyphens (also keeps it a safe path segment)."""
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class GitHubConnectorConfig(ConnectorConfig):
    """One GitHub organisation."""

    kind: ClassVar[str] = "github"

    org: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$", description="The organisation's login.")
    token: SecretStr = Field(description="Token of an org owner: classic with admin:org, or fine-grained Members r/w.")
    api_url: HttpUrl = Field(default=HttpUrl("https://api.github.com"), description="REST API root (GHES: /api/v3).")
    login_attribute: str = Field(
        default="github_login", description="The AccountSpec.attributes key holding the person's GitHub login."
    )
    managed_teams: NameSet = Field(
        default=frozenset(), description="Team slugs whose membership Entente owns; spec.groups must be among them."
    )

    @field_validator("managed_teams")
    @classmethod
    def _check_slugs(cls, value: frozenset[str]) -> frozenset[str]:
        """Fail at load on a slug that is no team slug (it also becomes a URL path segment)."""
        bad = sorted(slug for slug in value if not SLUG.match(slug))
        if bad:
            raise ValueError(f"not team slugs: {bad}")
        return value

    def open(self, http: httpx.AsyncClient) -> GitHubConnector:
        """Build the connector on the caller's client."""
        return GitHubConnector(self, http)


def github_error(response: httpx.Response, *, doing: str) -> ConnectorError:
    """Map a failed GitHub response; primary and secondary rate limits (403 or 429) are retryable."""
    if response.status_code in (403, 429):
        retry_after = parse_retry_after(response)
        if retry_after is not None:
            return RetryableError(f"{doing}: GitHub rate limit (retry-after)", retry_after=retry_after)
        reset = response.headers.get("x-ratelimit-reset", "").strip()
        if response.headers.get("x-ratelimit-remaining") == "0":
            wait = max(0.0, float(reset) - time.time()) if reset.isdigit() else SECONDARY_LIMIT_WAIT
            return RetryableError(f"{doing}: GitHub primary rate limit exhausted", retry_after=wait)
        try:
            message = str(mapping_or_empty(response.json()).get("message", ""))
        except ValueError:
            message = ""
        if response.status_code == 429 or "rate limit" in message.lower():
            return RetryableError(f"{doing}: GitHub secondary rate limit: {message}", retry_after=SECONDARY_LIMIT_WAIT)
    return error_for_response(response, doing=doing)


def _login_of(body: Mapping[str, Any], fallback: str) -> str:
    """``user.login`` of a membership answer (GitHub's spelling), else what we asked for."""
    login = mapping_or_empty(body.get("user")).get("login")
    return login if isinstance(login, str) and login else fallback


class GitHubConnector:
    """Org role and managed team memberships of one GitHub organisation; no retries, no state."""

    kind: ClassVar[str] = "github"

    def __init__(self, config: GitHubConnectorConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._org = f"/orgs/{config.org}"
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION, **bearer(config.token)}
        self._api = HttpApi(http, str(config.api_url), headers=headers, classify=github_error)

    @staticmethod
    def _json(response: httpx.Response | None) -> Mapping[str, Any]:
        """The JSON object of an answer, ``{}`` for none, an empty body or non-JSON (only read for spellings)."""
        if response is None or not response.content:
            return {}
        try:
            return mapping_or_empty(response.json())
        except ValueError:
            return {}

    def _login(self, spec: AccountSpec) -> str:
        """The person's GitHub login from the spec; RejectedError if missing or malformed (no retry helps)."""
        login = spec.attributes.get(self._config.login_attribute)
        if not login:
            raise RejectedError(f"github: the spec has no {self._config.login_attribute!r} attribute")
        if not LOGIN.match(login):
            raise RejectedError(f"github: {login!r} is not a GitHub login")
        return login

    async def _membership(self, login: str) -> Mapping[str, Any] | None:
        """The org membership (active or pending) of ``login``, ``None`` if neither."""
        found = await self._api.send(
            "GET", f"{self._org}/memberships/{login}", doing=f"github: read {login}", missing_ok=True
        )
        return None if found is None else self._json(found)

    async def update(self, ref: AccountRef, spec: AccountSpec, *, op_id: str) -> Result:
        """Grant the org role and the managed teams in ``spec`` (inviting if needed); ``active=False`` removes."""
        login = self._login(spec)
        unmanaged = spec.groups - self._config.managed_teams
        if unmanaged:
            raise RejectedError(f"github: teams {sorted(unmanaged)} are not in this workspace's managed_teams")
        if not spec.active:
            return await self._remove(login, doing=f"github: remove inactive {login}")
        role = "admin" if "admin" in spec.roles else "member"
        membership = await self._membership(login)
        changed = False
        if membership is None or membership.get("role") != role:
            put = await self._api.send(
                "PUT", f"{self._org}/memberships/{login}", doing=f"github: set {login} as {role}", json={"role": role}
            )
            membership = self._json(put)
            changed = True
        login = _login_of(membership, login)
        for slug in sorted(self._config.managed_teams):
            url = f"{self._org}/teams/{slug}/memberships/{login}"
            present = await self._api.send("GET", url, doing=f"github: read {login} in team {slug}", missing_ok=True)
            if slug in spec.groups and present is None:
                await self._api.send("PUT", url, doing=f"github: add {login} to team {slug}", json={"role": "member"})
                changed = True
            elif slug not in spec.groups and present is not None:
                await self._api.send("DELETE", url, doing=f"github: remove {login} from team {slug}", missing_ok=True)
                changed = True
        return Result(Outcome.CHANGED if changed else Outcome.UNCHANGED, login)

    async def _remove(self, login: str, *, doing: str) -> Result:
        """Remove the org membership or cancel the invitation; 404 means already so."""
        gone = await self._api.send("DELETE", f"{self._org}/memberships/{login}", doing=doing, missing_ok=True)
        return Result(Outcome.UNCHANGED if gone is None else Outcome.CHANGED, login)

    def _known_login(self, ref: AccountRef) -> str | None:
        """``ref.remote_id`` if we ever granted anything (only ``update`` learns a login), validated."""
        if ref.remote_id is None:
            return None
        if not LOGIN.match(ref.remote_id):
            raise RejectedError(f"github: stored remote id {ref.remote_id!r} is not a GitHub login")
        return ref.remote_id

    async def suspend(self, ref: AccountRef, *, op_id: str) -> Result:
        """Remove the org membership (GitHub has no per-org suspension); reinstatable for three months."""
        login = self._known_login(ref)
        if login is None:
            return Result(Outcome.UNCHANGED, None)
        return await self._remove(login, doing=f"github: suspend {login}")

    async def revoke_sessions(self, ref: AccountRef, *, op_id: str) -> Result:
        """Unsupported: GitHub cannot end another user's sessions outside Enterprise Managed Users."""
        raise UnsupportedError("github: no API ends another user's sessions (outside Enterprise Managed Users)")

    async def deprovision(self, ref: AccountRef, *, op_id: str) -> Result:
        """Remove the org membership or cancel the pending invitation; absent is UNCHANGED."""
        login = self._known_login(ref)
        if login is None:
            return Result(Outcome.UNCHANGED, None)
        return await self._remove(login, doing=f"github: deprovision {login}")

    async def _pages(self, url: str, *, doing: str) -> AsyncIterator[Mapping[str, Any]]:
        """Every item of a list endpoint, following ``Link: <…>; rel="next"``."""
        next_url: str | None = self._api.url(url)  # absolute, as the Link header's next URLs are
        seen: set[str] = set()
        while next_url is not None:
            if next_url in seen:
                raise RejectedError(f"{doing}: GitHub's next link loops back to {next_url}")
            seen.add(next_url)
            response = await self._api.send("GET", next_url, doing=doing)
            try:
                items = response.json()
            except ValueError as exc:
                raise RetryableError(f"{doing}: HTTP {response.status_code} with a non-JSON body") from exc
            for item in items if isinstance(items, list) else []:
                yield mapping_or_empty(item)
            next_url = response.links.get("next", {}).get("url")

    async def _logins(self, url: str, *, doing: str) -> set[str]:
        """Every ``login`` of a paged user list."""
        return {str(item["login"]) async for item in self._pages(url, doing=doing) if item.get("login")}

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        """Members (owners as ``admin``) with their managed teams, then pending invitations as inactive."""
        admins = await self._logins(f"{self._org}/members?role=admin&per_page={PER_PAGE}", doing="github: list owners")
        teams: dict[str, set[str]] = {}
        for slug in sorted(self._config.managed_teams):
            url = f"{self._org}/teams/{slug}/members?per_page={PER_PAGE}"
            for team_member in await self._logins(url, doing=f"github: list team {slug}"):
                teams.setdefault(team_member, set()).add(slug)
        async for member in self._pages(f"{self._org}/members?per_page={PER_PAGE}", doing="github: list members"):
            login = member.get("login")
            if isinstance(login, str) and login:
                yield RemoteAccount(
                    remote_id=login,
                    user_name=login,
                    subject_id=None,
                    active=True,
                    roles=frozenset({"admin" if login in admins else "member"}),
                    groups=frozenset(teams.get(login, ())),
                )
        invitations = f"{self._org}/invitations?per_page={PER_PAGE}"
        async for invitation in self._pages(invitations, doing="github: list invitations"):
            invitee = invitation.get("login")
            if isinstance(invitee, str) and invitee:  # invitations by email only have no login yet
                email = invitation.get("email")
                yield RemoteAccount(
                    remote_id=invitee,
                    user_name=invitee,
                    subject_id=None,
                    active=False,
                    email=email if isinstance(email, str) else None,
                    roles=frozenset({"admin" if invitation.get("role") == "admin" else "member"}),
                )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the caller's."""
