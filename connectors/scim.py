"""RFC 7644 SCIM 2.0 client connector: provisions accounts into any workspace that serves ``/Users`` and ``/Groups``.

Protocol used (RFC 7644; resources per RFC 7643 §4.1 User, §4.2 Group):

- Find: ``GET /Users/{id}`` (§3.4.1) by ``remote_id``, else ``GET /Users?filter=externalId eq "…"``
  (§3.4.2.2) by ``subject_id``; never by userName or email. Results are re-checked client-side, so a
  workspace that ignores the filter can never make us adopt someone else's account.
- update: ``POST /Users`` (§3.3) if absent, else compare and send only if something differs: ``PATCH``
  (§3.5.2, default) or a read-modify-write ``PUT`` (§3.5.1) that keeps attributes we do not manage.
- suspend: ``active`` false (RFC 7643 §4.1.1). revoke_sessions: SCIM has no session or token API, so it
  raises ``UnsupportedError`` and the engine applies the policy fallback (e.g. suspend).
- deprovision: ``DELETE /Users/{id}`` (§3.6; 404 is already so) or, per config, ``active`` false for good.
- list_accounts: ``GET /Users`` paged with ``startIndex``/``count`` (§3.4.2.4).
- groups: when ``spec.groups`` is non-empty the account is added (PATCH ``add`` on ``members``) to the
  Groups with those displayNames, creating a missing group if ``create_groups``; it is removed only
  from groups listed in ``managed_groups`` that the spec no longer names. Empty ``spec.roles`` and
  ``spec.groups`` leave the workspace's roles and groups alone; ``spec.attributes`` is not used.

Idempotency: SCIM defines no idempotency header (``op_id`` is unused). It comes from the lookup by
externalId before every create, so a retried create finds the account the first attempt made.

Errors (no retries here): transport failures and timeouts, 408, 429 and 5xx → ``RetryableError`` (with
``Retry-After``); 401/403 → ``CredentialsError``; other 4xx and non-SCIM answers → ``RejectedError``.

Payloads are plain JSON read case-insensitively (RFC 7643 §2.1), not scim2-models resources: its
``User`` refuses emails at reserved domains (``.test``) and unknown attributes, which real workspaces
send; and scim2-client speaks ``httpx2``, not the caller's ``httpx.AsyncClient``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from connectors.base import (
    AccountRef,
    AccountSpec,
    ConnectorConfig,
    NameSet,
    Outcome,
    RejectedError,
    RemoteAccount,
    Result,
    UnsupportedError,
    mapping_or_empty,
)
from connectors.http import HttpApi, bearer

__all__ = ["PATCH_SCHEMA", "USER_SCHEMA", "ScimConnector", "ScimConnectorConfig", "patch_message"]

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_MEDIA_TYPE = "application/scim+json"

JsonObject = Mapping[str, object]


class ScimConnectorConfig(ConnectorConfig):
    """One downstream SCIM 2.0 service provider."""

    kind: ClassVar[str] = "scim"

    base_url: AnyHttpUrl = Field(description="SCIM base URL, the parent of /Users (e.g. https://app.example/scim/v2).")
    token: SecretStr = Field(description="Bearer token the workspace issued for provisioning (RFC 6750).")
    deprovision: Literal["delete", "deactivate"] = Field(
        "delete", description="delete: DELETE the User; deactivate: keep it with active=false (no DELETE support)."
    )
    user_update: Literal["patch", "put"] = Field(
        "patch", description="patch: PATCH only what differs; put: read-modify-write PUT for PATCH-less workspaces."
    )
    page_size: int = Field(100, ge=1, le=1000, description="count per list_accounts page.")
    create_groups: bool = Field(True, description="Create a Group named in a spec if the workspace lacks it.")
    managed_groups: NameSet = Field(
        frozenset(), description="displayNames of Groups whose membership Entente owns: ungranted members are removed."
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_stored_kind(cls, data: object) -> object:
        """Configs sealed while ``kind`` was a field carry ``"kind": "scim"``: accepted and dropped (never stored)."""
        if isinstance(data, Mapping) and data.get("kind") == cls.kind:
            return {key: value for key, value in data.items() if key != "kind"}
        return data

    def open(self, http: httpx.AsyncClient) -> ScimConnector:
        """Build the connector on the caller's client; nothing to acquire."""
        return ScimConnector(self, http)


def _get(obj: JsonObject, name: str) -> object:
    """Attribute ``name`` of a SCIM object, names compared case-insensitively (RFC 7643 §2.1)."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def _str(obj: JsonObject, name: str) -> str | None:
    """A string attribute, ``None`` if absent or not a string."""
    value = _get(obj, name)
    return value if isinstance(value, str) else None


def _items(obj: JsonObject, name: str) -> list[JsonObject]:
    """The entries of a multi-valued complex attribute (non-objects dropped)."""
    value = _get(obj, name)
    return [mapping_or_empty(item) for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _values(obj: JsonObject, name: str, sub: str = "value") -> frozenset[str]:
    """The ``value`` (or ``sub``) strings of a multi-valued attribute such as roles or groups."""
    return frozenset(v for item in _items(obj, name) if (v := _str(item, sub)) is not None)


def _primary_email(user: JsonObject) -> str | None:
    """The primary email, else the first one (RFC 7643 §4.1.2)."""
    emails = _items(user, "emails")
    chosen = next((e for e in emails if _get(e, "primary") is True), emails[0] if emails else None)
    return None if chosen is None else _str(chosen, "value")


def _active(user: JsonObject) -> bool:
    """``active`` (absent means the workspace has no such notion: active)."""
    return _get(user, "active") is not False


def _same_ci(a: str | None, b: str | None) -> bool:
    """Equality for caseExact=false strings (userName, email values)."""
    return (a or "").casefold() == (b or "").casefold() and (a is None) == (b is None)


def _filter_eq(attribute: str, value: str) -> str:
    """``attribute eq "value"`` with the value as a JSON string (RFC 7644 §3.4.2.2)."""
    return f"{attribute} eq {json.dumps(value)}"


def _user_changes(current: JsonObject, ref: AccountRef, spec: AccountSpec) -> dict[str, object | None]:
    """Attribute path → desired value (``None`` = remove) for each managed attribute that differs."""
    changes: dict[str, object | None] = {}
    if not _same_ci(_str(current, "userName"), spec.user_name):
        changes["userName"] = spec.user_name
    if _str(current, "externalId") != ref.subject_id:
        changes["externalId"] = ref.subject_id
    if _str(current, "displayName") != spec.display_name:
        changes["displayName"] = spec.display_name
    name = mapping_or_empty(_get(current, "name"))
    for attr, wanted in (("givenName", spec.given_name), ("familyName", spec.family_name)):
        if _str(name, attr) != wanted:
            changes[f"name.{attr}"] = wanted
    if not _same_ci(_primary_email(current), spec.email):
        changes["emails"] = [{"value": spec.email, "type": "work", "primary": True}] if spec.email else None
    if spec.roles and _values(current, "roles") != spec.roles:
        changes["roles"] = [{"value": role} for role in sorted(spec.roles)]
    if _active(current) != spec.active:
        changes["active"] = spec.active
    return changes


def _new_user(ref: AccountRef, spec: AccountSpec) -> dict[str, object]:
    """The RFC 7643 §4.1 User we POST for ``spec``, owned by ``ref.subject_id`` through externalId."""
    body: dict[str, object] = {"schemas": [USER_SCHEMA], "userName": spec.user_name, "externalId": ref.subject_id}
    if spec.display_name is not None:
        body["displayName"] = spec.display_name
    name = {attr: value for attr, value in (("givenName", spec.given_name), ("familyName", spec.family_name)) if value}
    if name:
        body["name"] = name
    if spec.email is not None:
        body["emails"] = [{"value": spec.email, "type": "work", "primary": True}]
    if spec.roles:
        body["roles"] = [{"value": role} for role in sorted(spec.roles)]
    body["active"] = spec.active
    return body


def _replaced(current: JsonObject, changes: Mapping[str, object | None]) -> dict[str, object]:
    """``current`` with ``changes`` applied, for a PUT that keeps what we do not manage (RFC 7644 §3.5.1)."""
    body: dict[str, object] = {k: v for k, v in current.items() if k.lower() not in ("meta", "groups")}

    def put(target: dict[str, object], name: str, value: object | None) -> None:
        for key in [k for k in target if k.lower() == name.lower()]:
            del target[key]
        if value is not None:
            target[name] = value

    for path, value in changes.items():
        if "." in path:
            parent, child = path.split(".", 1)
            sub = dict(mapping_or_empty(_get(body, parent)))
            put(sub, child, value)
            put(body, parent, sub or None)
        else:
            put(body, path, value)
    schemas = _get(body, "schemas")
    if not isinstance(schemas, list) or USER_SCHEMA not in schemas:
        put(body, "schemas", [USER_SCHEMA, *(schemas if isinstance(schemas, list) else [])])
    return body


def patch_message(operations: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """An RFC 7644 §3.5.2 PatchOp message carrying ``operations`` (also used by the Slack connector)."""
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


def _patch_ops(changes: Mapping[str, object | None]) -> list[dict[str, object]]:
    """replace for a new value, remove (path only, §3.5.2.2) for a cleared one."""
    return [
        {"op": "remove", "path": path} if value is None else {"op": "replace", "path": path, "value": value}
        for path, value in changes.items()
    ]


class ScimConnector:
    """A SCIM 2.0 service provider reached through the caller's HTTP client; stateless between calls."""

    kind: ClassVar[str] = "scim"

    def __init__(self, config: ScimConnectorConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._api = HttpApi(
            http,
            str(config.base_url),
            headers={**bearer(config.token), "Accept": f"{SCIM_MEDIA_TYPE}, application/json"},
            json_media_type=SCIM_MEDIA_TYPE,
        )

    @staticmethod
    def _json(response: httpx.Response, *, doing: str) -> JsonObject:
        """The response body as a JSON object, or ``RejectedError``: the workspace did not answer SCIM."""
        try:
            value = response.json()
        except ValueError as exc:
            raise RejectedError(f"{doing}: HTTP {response.status_code} body is not JSON") from exc
        if not isinstance(value, Mapping):
            raise RejectedError(f"{doing}: HTTP {response.status_code} body is not a JSON object")
        return value

    async def _search(
        self, endpoint: str, filter_: str, *, doing: str, attributes: str | None = None
    ) -> list[JsonObject]:
        """Every resource matching ``filter_`` (RFC 7644 §3.4.2.2), paged through."""
        found: list[JsonObject] = []
        start = 1
        while True:
            params: dict[str, str | int] = {"filter": filter_, "startIndex": start, "count": self._config.page_size}
            if attributes:
                params["attributes"] = attributes
            response = await self._api.send("GET", endpoint, doing=doing, params=params)
            page = self._json(response, doing=doing)
            resources = _items(page, "Resources")
            found.extend(resources)
            start += len(resources)
            total = _get(page, "totalResults")
            if not resources or not isinstance(total, int) or start > total:
                return found

    async def _find(self, ref: AccountRef) -> JsonObject | None:
        """Our User for ``ref``: by remote id if it still carries our externalId, else by externalId; never by email."""
        if ref.remote_id:
            response = await self._api.send(
                "GET", f"/Users/{quote(ref.remote_id, safe='')}", doing="read user", missing_ok=True
            )
            if response is not None:
                user = self._json(response, doing="read user")
                if _str(user, "externalId") in (None, ref.subject_id) and _str(user, "id") == ref.remote_id:
                    return user
        matches = [
            user
            for user in await self._search("/Users", _filter_eq("externalId", ref.subject_id), doing="find user")
            if _str(user, "externalId") == ref.subject_id and _str(user, "id")
        ]
        if len(matches) > 1:
            raise RejectedError(f"find user: {len(matches)} Users carry externalId {ref.subject_id!r}")
        return matches[0] if matches else None

    async def _change_user(self, user: JsonObject, changes: Mapping[str, object | None], *, doing: str) -> None:
        """Apply ``changes`` by PATCH (RFC 7644 §3.5.2) or read-modify-write PUT (§3.5.1)."""
        path = f"/Users/{quote(str(_str(user, 'id')), safe='')}"
        if self._config.user_update == "patch":
            await self._api.send("PATCH", path, doing=doing, json=patch_message(_patch_ops(changes)))
        else:
            await self._api.send("PUT", path, doing=doing, json=_replaced(user, changes))

    async def update(self, ref: AccountRef, spec: AccountSpec, *, op_id: str) -> Result:
        """Create the User or bring it to ``spec``; CHANGED only if a request changed something."""
        current = await self._find(ref)
        if current is None:
            response = await self._api.send("POST", "/Users", doing="create user", json=_new_user(ref, spec))
            remote_id = _str(self._json(response, doing="create user"), "id")
            if not remote_id:
                raise RejectedError("create user: the response has no id")
            await self._sync_groups(remote_id, spec.groups)
            return Result(Outcome.CHANGED, remote_id)
        remote_id = str(_str(current, "id"))
        changes = _user_changes(current, ref, spec)
        if changes:
            await self._change_user(current, changes, doing="update user")
        groups_changed = await self._sync_groups(remote_id, spec.groups)
        return Result(Outcome.CHANGED if changes or groups_changed else Outcome.UNCHANGED, remote_id)

    async def _deactivate(self, ref: AccountRef, *, doing: str) -> Result:
        """Set ``active`` false (RFC 7643 §4.1.1); absent or already inactive is UNCHANGED."""
        current = await self._find(ref)
        if current is None:
            return Result(Outcome.UNCHANGED, None)
        remote_id = _str(current, "id")
        if not _active(current):
            return Result(Outcome.UNCHANGED, remote_id)
        await self._change_user(current, {"active": False}, doing=doing)
        return Result(Outcome.CHANGED, remote_id)

    async def suspend(self, ref: AccountRef, *, op_id: str) -> Result:
        """Disable sign-in but keep the User, its data and its group memberships."""
        return await self._deactivate(ref, doing="suspend user")

    async def revoke_sessions(self, ref: AccountRef, *, op_id: str) -> Result:
        """Always unsupported: RFC 7644 has no session or token revocation endpoint."""
        raise UnsupportedError("SCIM 2.0 (RFC 7644) has no session revocation; apply the policy fallback")

    async def deprovision(self, ref: AccountRef, *, op_id: str) -> Result:
        """DELETE the User (RFC 7644 §3.6), or deactivate it for good when configured; absent is UNCHANGED."""
        if self._config.deprovision == "deactivate":
            return await self._deactivate(ref, doing="deprovision user")
        current = await self._find(ref)
        if current is None:
            return Result(Outcome.UNCHANGED, None)
        path = f"/Users/{quote(str(_str(current, 'id')), safe='')}"
        gone = await self._api.send("DELETE", path, doing="delete user", missing_ok=True)
        return Result(Outcome.UNCHANGED if gone is None else Outcome.CHANGED, None)

    async def _sync_groups(self, user_id: str, wanted: frozenset[str]) -> bool:
        """Add the User to the wanted Groups and remove it from ungranted managed ones; True if it changed any."""
        managed = {name.casefold() for name in self._config.managed_groups}
        if not wanted and not managed:
            return False
        member_of = {
            name.casefold(): str(_str(group, "id"))
            for group in await self._search(
                "/Groups", _filter_eq("members.value", user_id), doing="read memberships", attributes="displayName"
            )
            if (name := _str(group, "displayName")) is not None and _str(group, "id")
        }
        wanted_folded = {name.casefold(): name for name in wanted}
        changed = False
        for folded, name in sorted(wanted_folded.items()):
            if folded not in member_of:
                await self._join(name, user_id)
                changed = True
        for folded, group_id in sorted(member_of.items()):
            if folded in managed and folded not in wanted_folded:
                operation: dict[str, object] = {"op": "remove", "path": f"members[value eq {json.dumps(user_id)}]"}
                path = f"/Groups/{quote(group_id, safe='')}"
                await self._api.send("PATCH", path, doing="leave group", json=patch_message([operation]))
                changed = True
        return changed

    async def _join(self, name: str, user_id: str) -> None:
        """Add the User to the Group named ``name`` (RFC 7644 §3.5.2.1), creating the Group if allowed."""
        groups = [
            group
            for group in await self._search(
                "/Groups", _filter_eq("displayName", name), doing="find group", attributes="displayName"
            )
            if (_str(group, "displayName") or "").casefold() == name.casefold() and _str(group, "id")
        ]
        if len(groups) > 1:
            raise RejectedError(f"find group: {len(groups)} Groups are named {name!r}")
        member = [{"value": user_id}]
        if groups:
            path = f"/Groups/{quote(str(_str(groups[0], 'id')), safe='')}"
            body = patch_message([{"op": "add", "path": "members", "value": member}])
            await self._api.send("PATCH", path, doing="join group", json=body)
        elif self._config.create_groups:
            body = {"schemas": [GROUP_SCHEMA], "displayName": name, "members": member}
            await self._api.send("POST", "/Groups", doing="create group", json=body)
        else:
            raise RejectedError(f"join group: no Group is named {name!r} and create_groups is off")

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        """Every User, paged by startIndex/count (RFC 7644 §3.4.2.4); groups come from User.groups if served."""
        start = 1
        while True:
            params: dict[str, str | int] = {"startIndex": start, "count": self._config.page_size}
            response = await self._api.send("GET", "/Users", doing="list users", params=params)
            page = self._json(response, doing="list users")
            resources = _items(page, "Resources")
            for user in resources:
                remote_id = _str(user, "id")
                if remote_id is None:
                    raise RejectedError("list users: a User has no id")
                yield RemoteAccount(
                    remote_id=remote_id,
                    user_name=_str(user, "userName"),
                    subject_id=_str(user, "externalId"),
                    active=_active(user),
                    email=_primary_email(user),
                    roles=_values(user, "roles"),
                    groups=_values(user, "groups", "display"),
                )
            start += len(resources)
            total = _get(page, "totalResults")
            if not resources or not isinstance(total, int) or start > total:
                return

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the caller's."""
