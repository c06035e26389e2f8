"""Slack Enterprise Grid: accounts through the Slack SCIM 2.0 API, sessions through the Web API.

Vendor documents relied on (https://docs.slack.dev):

- SCIM 2.0 API reference (``/reference/scim-api``), base ``https://api.slack.com/scim/v2``, bearer token
  of an Org Owner/Admin with the ``admin`` scope: ``GET /Users`` (``filter``, ``startIndex``, ``count``;
  a ListResponse with ``totalResults``, ``itemsPerPage``, ``startIndex``, ``Resources``), ``GET``/
  ``PATCH /Users/<id>``, ``POST /Users`` (at least one email; Slack rewrites ``userName`` into a
  Slack-appropriate name), ``DELETE /Users/<id>`` ("sets a Slack user to deactivated": Slack never
  deletes a person) and ``PATCH /Groups/<id>`` (RFC 7644 §3.5.2 PatchOp on ``members``).
- SCIM API rate limits (``/reference/scim-api/rate-limits``): org-wide per-minute limits; "if you
  receive an HTTP 429 response ... parse the Retry-After header".
- ``admin.users.session.reset`` (``/reference/methods/admin.users.session.reset``): ``POST
  https://slack.com/api/admin.users.session.reset`` with ``user_id``, a user token with
  ``admin.users:write``, Enterprise only. Like every Web API method it answers HTTP 200 with
  ``{"ok": false, "error": "<code>"}`` on failure, and HTTP 429 + ``Retry-After`` with error
  ``ratelimited`` when rate limited (Web API rate limits guide).

Mapping to the connector interface:

- The person is matched by ``externalId`` = ``subject_id`` (``filter=externalId eq "..."``) or by
  the Slack user id (``remote_id``) once known; never by email. Slack refuses a second account with
  an existing email (409), which surfaces as ``RejectedError``: Slack never merges people.
- ``update`` creates, or PATCHes only the attributes that differ (display name, given/family name,
  primary email, ``active``, ``externalId``) and adds/removes the user in the Slack IdP groups named by
  ``spec.groups`` (SCIM group ids). ``userName`` is sent at creation only: Slack rewrites it, so it
  cannot be compared afterwards. Roles are not managed: Slack's SCIM API has no workspace-role attribute
  Entente relies on, so ``spec.roles`` is ignored.
- ``suspend`` = ``PATCH active=false`` (Slack's deactivation, reversible by ``update``);
  ``deprovision`` = ``DELETE`` (also a deactivation in Slack) unless already deactivated, then
  ``UNCHANGED``; so on Slack a suspended account is already deprovisioned and the listing shows both
  as inactive.
- ``revoke_sessions`` calls ``admin.users.session.reset``: ``CHANGED`` for an active user (Slack
  cannot tell whether sessions existed), ``UNCHANGED`` for an absent or deactivated one (deactivation
  already signed the person out) or when Slack answers ``user_not_found``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx
from pydantic import Field, HttpUrl, SecretStr

from connectors.base import (
    AccountRef,
    AccountSpec,
    ConnectorConfig,
    ConnectorError,
    CredentialsError,
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
from connectors.scim import USER_SCHEMA, patch_message

__all__ = ["SlackConnectorConfig", "SlackConnector", "web_api_error"]

SLACK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

CREDENTIAL_ERRORS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "not_allowed_token_type",
        "missing_scope",
        "not_an_admin",
        "ekm_access_denied",
    }
)
"""Web API error codes meaning our admin token (or its scopes or its owner's role) is not good enough."""
RETRYABLE_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})
UNSUPPORTED_ERRORS = frozenset({"feature_not_enabled", "not_enterprise_team"})
"""The org's plan has no session reset: the engine applies its fallback."""


class SlackConnectorConfig(ConnectorConfig):
    """One Slack Enterprise Grid org."""

    kind: ClassVar[str] = "slack"

    scim_base_url: HttpUrl = Field(
        default=HttpUrl("https://api.slack.com/scim/v2"), description="Slack's SCIM 2.0 base URL."
    )
    scim_token: SecretStr = Field(description="SCIM token of an Org Owner/Admin (the SCIM app's 'admin' scope).")
    admin_token: SecretStr = Field(description="User token (xoxp-) with admin.users:write, for session resets.")
    web_api_base_url: HttpUrl = Field(default=HttpUrl("https://slack.com/api"), description="Slack's Web API base.")
    page_size: int = Field(default=100, ge=1, le=1000, description="Users per SCIM listing page (Slack's max: 1000).")

    def open(self, http: httpx.AsyncClient) -> SlackConnector:
        """Build the connector on the caller's client."""
        return SlackConnector(self, http)


def _web_api_code(response: httpx.Response) -> str | None:
    """The ``error`` code of a Web API answer, ``""`` when ``ok`` is true, ``None`` if the body is no such answer."""
    try:
        body = mapping_or_empty(response.json())
    except ValueError:
        return None
    if body.get("ok") is True:
        return ""
    return str(body.get("error") or "unknown_error")


def web_api_error(response: httpx.Response, *, doing: str) -> ConnectorError | None:
    """Classify a Web API answer: ``None`` when ``ok`` is true, else the error to raise (HTTP 429/5xx included)."""
    if response.status_code != 200:
        return error_for_response(response, doing=doing)
    code = _web_api_code(response)
    if code is None:
        return RetryableError(f"{doing}: HTTP 200 with a body that is no Web API answer")
    if not code:
        return None
    detail = f"{doing}: Slack error {code!r}"
    if code in RETRYABLE_ERRORS:
        return RetryableError(detail, retry_after=parse_retry_after(response))
    if code in CREDENTIAL_ERRORS:
        return CredentialsError(detail)
    if code in UNSUPPORTED_ERRORS:
        return UnsupportedError(detail)
    return RejectedError(detail)


def _slack_id(value: object, *, what: str) -> str:
    """A Slack user or group id (``W0123ABC``, ``S0123ABC``), checked so it is a safe URL path segment."""
    if not isinstance(value, str) or not SLACK_ID.match(value):
        raise RejectedError(f"slack: {what} {value!r} is not a Slack id")
    return value


def _quote(value: str) -> str:
    """A SCIM filter string literal (RFC 7644 §3.4.2.2: JSON string rules)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _primary_email(user: Mapping[str, Any]) -> str | None:
    """The primary (else first) email value of a SCIM user."""
    emails = [mapping_or_empty(e) for e in user.get("emails") or [] if isinstance(e, Mapping)]
    chosen = next((e for e in emails if e.get("primary") is True), emails[0] if emails else None)
    value = chosen.get("value") if chosen else None
    return value if isinstance(value, str) else None


def _group_ids(user: Mapping[str, Any]) -> frozenset[str]:
    """The SCIM group ids the user is in (``groups[].value``)."""
    groups = user.get("groups")
    values = (mapping_or_empty(g).get("value") for g in groups) if isinstance(groups, list) else ()
    return frozenset(v for v in values if isinstance(v, str))


def _name(user: Mapping[str, Any], part: str) -> object:
    """``name.<part>`` of a SCIM user, ``None`` when Slack left it out."""
    return mapping_or_empty(user.get("name")).get(part)


def _patch_ops(user: Mapping[str, Any], spec: AccountSpec, subject_id: str) -> list[dict[str, Any]]:
    """RFC 7644 §3.5.2.3 ``replace`` operations for every managed attribute that differs from ``spec``."""
    ops: list[dict[str, Any]] = []

    def replace(path: str, value: object) -> None:
        ops.append({"op": "replace", "path": path, "value": value})

    if user.get("externalId") != subject_id:
        replace("externalId", subject_id)
    if spec.display_name is not None and user.get("displayName") != spec.display_name:
        replace("displayName", spec.display_name)
    if spec.given_name is not None and _name(user, "givenName") != spec.given_name:
        replace("name.givenName", spec.given_name)
    if spec.family_name is not None and _name(user, "familyName") != spec.family_name:
        replace("name.familyName", spec.family_name)
    current_email = _primary_email(user)
    if spec.email is not None and (current_email or "").lower() != spec.email.lower():
        replace("emails", [{"value": spec.email, "type": "work", "primary": True}])
    if (user.get("active") is not False) != spec.active:
        replace("active", spec.active)
    return ops


class SlackConnector:
    """Slack SCIM for accounts, ``admin.users.session.reset`` for sessions; no retries, no state."""

    kind: ClassVar[str] = "slack"

    def __init__(self, config: SlackConnectorConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        accept = {"Accept": "application/json"}
        self._scim = HttpApi(http, str(config.scim_base_url), headers={**bearer(config.scim_token), **accept})
        self._web = HttpApi(http, str(config.web_api_base_url), headers={**bearer(config.admin_token), **accept})

    @staticmethod
    def _json(response: httpx.Response, *, doing: str) -> Mapping[str, Any]:
        """The JSON object of a SCIM answer; a non-JSON 2xx is a proxy glitch, so retryable."""
        try:
            return mapping_or_empty(response.json())
        except ValueError as exc:
            raise RetryableError(f"{doing}: HTTP {response.status_code} with a non-JSON body") from exc

    async def _find(self, ref: AccountRef) -> Mapping[str, Any] | None:
        """The Slack user for ``ref``: by Slack id if known, else by ``externalId``; ``None`` if absent."""
        doing = f"slack: find user for subject {ref.subject_id}"
        if ref.remote_id:
            remote_id = _slack_id(ref.remote_id, what="stored user id")
            found = await self._scim.send("GET", f"/Users/{remote_id}", doing=doing, missing_ok=True)
            if found is not None:
                user = self._json(found, doing=doing)
                owner = user.get("externalId")
                if owner not in (None, "", ref.subject_id):
                    raise RejectedError(f"{doing}: Slack user {ref.remote_id} belongs to another subject")
                return user
        params = {"filter": f"externalId eq {_quote(ref.subject_id)}", "startIndex": "1", "count": "2"}
        listed = await self._scim.send("GET", "/Users", doing=doing, params=params)
        resources = [mapping_or_empty(u) for u in self._json(listed, doing=doing).get("Resources") or []]
        if len(resources) > 1:
            raise RejectedError(f"{doing}: {len(resources)} Slack users carry this externalId")
        return resources[0] if resources else None

    async def _set_groups(self, user_id: str, current: frozenset[str], desired: frozenset[str]) -> bool:
        """Add/remove the user in Slack IdP groups (RFC 7644 §3.5.2.1/§3.5.2.2 on ``members``); True if any."""
        for group_id in sorted(desired - current):
            ops = [{"op": "add", "path": "members", "value": [{"value": user_id}]}]
            await self._scim.send(
                "PATCH",
                f"/Groups/{group_id}",
                doing=f"slack: add {user_id} to group {group_id}",
                json=patch_message(ops),
            )
        for group_id in sorted(current - desired):
            ops = [{"op": "remove", "path": f"members[value eq {_quote(user_id)}]"}]
            await self._scim.send(
                "PATCH",
                f"/Groups/{group_id}",
                doing=f"slack: remove {user_id} from group {group_id}",
                json=patch_message(ops),
            )
        return current != desired

    async def update(self, ref: AccountRef, spec: AccountSpec, *, op_id: str) -> Result:
        """Create the user, or PATCH what differs (also reactivates); then match group memberships."""
        doing = f"slack: update subject {ref.subject_id}"
        for group_id in spec.groups:  # before any call, so a bad grant changes nothing
            _slack_id(group_id, what="group")
        user = await self._find(ref)
        if user is None:
            if spec.email is None:
                raise RejectedError(f"{doing}: Slack requires an email to create a user")
            body: dict[str, Any] = {
                "schemas": [USER_SCHEMA],
                "externalId": ref.subject_id,
                "userName": spec.user_name,
                "emails": [{"value": spec.email, "type": "work", "primary": True}],
                "active": spec.active,
            }
            if spec.display_name is not None:
                body["displayName"] = spec.display_name
            name = {k: v for k, v in (("givenName", spec.given_name), ("familyName", spec.family_name)) if v}
            if name:
                body["name"] = name
            created = await self._scim.send("POST", "/Users", doing=doing, json=body)
            user_id = _slack_id(self._json(created, doing=doing).get("id"), what="new user id")
            await self._set_groups(user_id, frozenset(), spec.groups)
            return Result(Outcome.CHANGED, user_id)
        user_id = _slack_id(user.get("id"), what="user id")
        ops = _patch_ops(user, spec, ref.subject_id)
        if ops:
            await self._scim.send("PATCH", f"/Users/{user_id}", doing=doing, json=patch_message(ops))
        groups_changed = await self._set_groups(user_id, _group_ids(user), spec.groups)
        return Result(Outcome.CHANGED if ops or groups_changed else Outcome.UNCHANGED, user_id)

    async def _active_user_id(self, ref: AccountRef) -> str | Result:
        """The Slack id of ``ref``'s active user, or the ``UNCHANGED`` result when it is absent or deactivated."""
        user = await self._find(ref)
        if user is None:
            return Result(Outcome.UNCHANGED, None)
        user_id = _slack_id(user.get("id"), what="user id")
        return Result(Outcome.UNCHANGED, user_id) if user.get("active") is False else user_id

    async def suspend(self, ref: AccountRef, *, op_id: str) -> Result:
        """``PATCH active=false``: Slack's deactivation, which keeps the account for a rejoiner."""
        user_id = await self._active_user_id(ref)
        if isinstance(user_id, Result):
            return user_id
        ops = [{"op": "replace", "path": "active", "value": False}]
        await self._scim.send(
            "PATCH",
            f"/Users/{user_id}",
            doing=f"slack: suspend {user_id}",
            json=patch_message(ops),
        )
        return Result(Outcome.CHANGED, user_id)

    async def revoke_sessions(self, ref: AccountRef, *, op_id: str) -> Result:
        """``admin.users.session.reset`` for an active user; a deactivated or absent one has no sessions."""
        user_id = await self._active_user_id(ref)
        if isinstance(user_id, Result):
            return user_id
        doing = f"slack: admin.users.session.reset for {user_id}"
        response = await self._web.request("POST", "/admin.users.session.reset", doing=doing, json={"user_id": user_id})
        if response.status_code == 200 and _web_api_code(response) == "user_not_found":
            return Result(Outcome.UNCHANGED, user_id)  # gone between our lookup and the reset
        error = web_api_error(response, doing=doing)
        if error is not None:
            raise error
        return Result(Outcome.CHANGED, user_id)

    async def deprovision(self, ref: AccountRef, *, op_id: str) -> Result:
        """``DELETE /Users/<id>``, which Slack implements as a final deactivation; already inactive is UNCHANGED."""
        user_id = await self._active_user_id(ref)
        if isinstance(user_id, Result):
            return user_id
        gone = await self._scim.send(
            "DELETE", f"/Users/{user_id}", doing=f"slack: deprovision {user_id}", missing_ok=True
        )
        return Result(Outcome.UNCHANGED if gone is None else Outcome.CHANGED, user_id)

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        """Every Slack user (deactivated ones as inactive), paged by ``startIndex``/``count``."""
        start = 1
        while True:
            doing = f"slack: list users from {start}"
            params = {"startIndex": str(start), "count": str(self._config.page_size)}
            page = await self._scim.send("GET", "/Users", doing=doing, params=params)
            body = self._json(page, doing=doing)
            resources = [mapping_or_empty(u) for u in body.get("Resources") or []]
            for user in resources:
                user_id = user.get("id")
                if not isinstance(user_id, str):
                    continue
                external_id = user.get("externalId")
                user_name = user.get("userName")
                yield RemoteAccount(
                    remote_id=user_id,
                    user_name=user_name if isinstance(user_name, str) else None,
                    subject_id=external_id if isinstance(external_id, str) and external_id else None,
                    active=user.get("active") is not False,
                    email=_primary_email(user),
                    groups=_group_ids(user),
                )
            total = body.get("totalResults")
            start += len(resources)
            if not resources or (isinstance(total, int) and start > total):
                return

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the caller's."""
