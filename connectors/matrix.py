"""Matrix workspaces through the Synapse admin API (``/_synapse/admin``), standards §8.3.

An account is a local Matrix user keyed by our subject id, stored as the Synapse SSO mapping
``external_ids: [{"auth_provider": idp_id, "external_id": subject_id}]``: the same mapping Synapse's
own OIDC login (provider ``idp_id``, issue 5) uses, so a person we provision signs in to that account.
Accounts are found with ``GET /_synapse/admin/v1/auth_providers/{idp_id}/users/{subject_id}`` only,
never by email or by localpart. Each intent maps to one Synapse lever, as observed on Synapse 1.163:

- ``update``: ``PUT /_synapse/admin/v2/users/{user_id}`` with only the fields that differ
  (``displayname``, the email threepid, ``external_ids``, ``locked``/``deactivated`` false), so a repeat
  sends nothing and is ``UNCHANGED``. A new account's localpart comes from ``user_name`` (see
  ``localpart_for``); a localpart held by an account not mapped to this subject is refused, never
  adopted. Synapse *moves* an email threepid that another user holds, so an email held by someone
  else is refused with ``RejectedError`` instead. Room membership is then made equal to
  ``spec.groups`` (room ids ``!…`` or aliases ``#…``): missing rooms are joined with
  ``POST /_synapse/admin/v1/join/{room}`` (which invites first in invite-only rooms); a granted room
  that is no longer in ``spec.groups`` is left by a kick from the admin account
  (``POST /_matrix/client/v3/rooms/{room}/kick``), so the admin must be joined there with kick power.
  Only rooms the admin account is joined to are managed: rooms people made themselves (direct
  messages, private rooms) are never touched. ``spec.active = False`` means locked, and rooms are
  then left as they are.
- ``suspend``: ``locked: true``. A locked user cannot log in, and every request with one of its
  existing access tokens is refused with 401 ``M_USER_LOCKED`` (soft logout); devices, E2EE keys,
  rooms and messages are kept, and unlocking (``update``) makes the old sessions work again. Pair it
  with ``revoke_sessions`` when old sessions must not come back. (``/_synapse/admin/v1/suspend`` is
  not used: a suspended user can still sign in and read.)
- ``revoke_sessions``: deletes every device (``POST /_synapse/admin/v2/users/{id}/delete_devices``),
  which deletes their access and refresh tokens: the next request gets 401 ``M_UNKNOWN_TOKEN``.
  Tokens without a device (admin-issued puppet tokens) have no admin API and are not revoked.
- ``deprovision``: ``POST /_synapse/admin/v1/deactivate/{user_id} {"erase": deprovision_erase}``
  (removes devices, tokens, threepids, pushers and, in the background, room memberships; keeps the
  SSO mapping, so a later ``update`` reactivates the same account for a rejoiner).
- ``list_accounts``: pages ``GET /_synapse/admin/v2/users`` (``from``/``limit``/``next_token``, with
  deactivated and locked users). The list carries neither external ids nor threepids, so each
  non-guest user costs one more ``GET /_synapse/admin/v2/users/{id}``, and each of *our* active
  users one ``joined_rooms`` call: about ``N/page_size + N + ours`` requests for N users.

``op_id`` is not sent: the admin API has no idempotency key; every call compares first instead.
Errors: timeouts and refused connections, 5xx and 429 (``retry_after_ms`` in the body and/or
``Retry-After``) are ``RetryableError``; 401/403 ``CredentialsError``; other 4xx ``RejectedError``.
A 403 on a room join or kick means the room's power levels refuse the admin, not that our token is
bad (the same token has just passed the admin checks of the same call), so it is ``RejectedError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field, HttpUrl, SecretStr, field_validator

from connectors.base import (
    AccountRef,
    AccountSpec,
    ConnectorConfig,
    ConnectorError,
    Outcome,
    RejectedError,
    RemoteAccount,
    Result,
    RetryableError,
    error_for_response,
    mapping_or_empty,
)
from connectors.http import HttpApi, bearer

__all__ = ["MatrixConnector", "MatrixConnectorConfig", "canonical_email", "localpart_for"]

LOCALPART_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
"""Characters kept as they are; the rest of the Matrix grammar (``=``, ``/``, ``+``) is escaped too,
``=`` because it introduces escapes, ``/`` and ``+`` because older servers and URLs mishandle them."""
MAX_USER_ID_LENGTH = 255
"""Matrix spec appendix "User identifiers": the whole ``@localpart:server`` is at most 255 bytes."""
KICK_REASON = "Entente: access to this room is no longer granted"


def localpart_for(user_name: str, *, drop_domain: bool = False, prefix: str = "", server_name: str = "") -> str:
    """A valid, deterministic Matrix localpart for ``user_name``; distinct names give distinct localparts.

    The name is lower-cased (SCIM userNames are case-insensitive), optionally cut at its last ``@``,
    then every character outside ``[a-z0-9._-]`` becomes ``=xx`` per UTF-8 byte (the spec's
    recommended mapping; ``=`` itself becomes ``=3d``, so the mapping is reversible). A leading ``_``
    (reserved by Synapse) or an all-digit result (reserved for guests) gets its first character
    escaped the same way. An id longer than 255 bytes is cut and suffixed with a hash of the name.
    """
    name = user_name.strip().lower()
    if drop_domain and "@" in name:
        name = name.rsplit("@", 1)[0]
    if not name:
        raise RejectedError(f"user_name {user_name!r} gives an empty Matrix localpart")
    escaped = prefix + "".join(c if c in LOCALPART_SAFE else _escape(c) for c in name)
    if escaped[0] == "_" or escaped.isdigit():
        escaped = _escape(escaped[0]) + escaped[1:]
    room = MAX_USER_ID_LENGTH - len(f"@:{server_name}".encode())
    if len(escaped) > room:
        digest = hashlib.sha256(user_name.encode()).hexdigest()[:10]
        escaped = f"{escaped[: room - 11]}-{digest}"
    return escaped


def _escape(char: str) -> str:
    return "".join(f"={byte:02x}" for byte in char.encode())


def canonical_email(address: str) -> str:
    """The form Synapse stores an email threepid in (MSC2265: local part casefolded, domain lower-cased)."""
    parts = address.strip().split("@")
    if len(parts) != 2 or not all(parts):
        raise RejectedError(f"email {address!r} is not an address Synapse accepts")
    return f"{parts[0].casefold()}@{parts[1].lower()}"


class MatrixConnectorConfig(ConnectorConfig):
    """One Synapse homeserver, reached with a server admin's access token."""

    kind: ClassVar[str] = "matrix"

    homeserver_url: HttpUrl = Field(
        description="Base URL of the homeserver's client/admin API, e.g. https://matrix.example."
    )
    server_name: str = Field(min_length=1, description="The homeserver's server_name: the part after ':' in user ids.")
    admin_token: SecretStr = Field(description="Access token of a Synapse server admin (the account Entente acts as).")
    idp_id: str = Field(
        default="oidc-entente",
        min_length=1,
        description="Auth provider id under which subject ids are stored as external_ids (Synapse prefixes 'oidc-').",
    )
    localpart_prefix: str = Field(default="", description="Prepended to every derived localpart, e.g. 'acme.'.")
    localpart_drop_domain: bool = Field(
        default=False,
        description="Derive the localpart from the part of user_name before its last '@' (collisions are refused).",
    )
    deprovision_erase: bool = Field(
        default=False, description="Deprovision also erases the profile and hides messages from new joiners (GDPR)."
    )
    page_size: int = Field(default=100, ge=1, le=1000, description="Users per page when listing accounts.")

    @field_validator("localpart_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        """A prefix outside the kept characters would make every derived localpart invalid."""
        if any(c not in LOCALPART_SAFE for c in value):
            raise ValueError("localpart_prefix may only contain a-z, 0-9, '.', '_' and '-'")
        return value

    def open(self, http: httpx.AsyncClient) -> MatrixConnector:
        """Build the connector on the caller's client."""
        return MatrixConnector(self, http)


@dataclass(frozen=True)
class _User:
    """A Synapse user as ``GET /_synapse/admin/v2/users/{id}`` shows it."""

    user_id: str
    body: Mapping[str, object]

    @property
    def deactivated(self) -> bool:
        return self.body.get("deactivated") is True

    @property
    def locked(self) -> bool:
        return self.body.get("locked") is True

    def pairs(self, key: str, first: str, second: str) -> set[tuple[str, str]]:
        """A list of two-string objects (``threepids``, ``external_ids``) as a set of pairs."""
        items = self.body.get(key)
        found: set[tuple[str, str]] = set()
        for item in items if isinstance(items, list) else []:
            entry = mapping_or_empty(item)
            a, b = entry.get(first), entry.get(second)
            if isinstance(a, str) and isinstance(b, str):
                found.add((a, b))
        return found


class MatrixConnector:
    """Accounts on one Synapse homeserver; stateless between calls apart from the admin's user id."""

    kind: ClassVar[str] = "matrix"

    def __init__(self, config: MatrixConnectorConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._api = HttpApi(http, str(config.homeserver_url), headers=bearer(config.admin_token))
        self._admin_id: str | None = None

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the caller's."""

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        doing: str,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        missing_ok: bool = False,
        room_op: bool = False,
    ) -> Mapping[str, object] | None:
        """One request with the admin token: the JSON body, or ``None`` for a 404 ``M_NOT_FOUND`` if ``missing_ok``."""
        response = await self._api.request(method, path, doing=doing, json=json, params=params)
        if response.is_success:
            try:
                return mapping_or_empty(response.json())
            except ValueError as exc:
                raise RejectedError(f"{doing}: HTTP {response.status_code} without a JSON body") from exc
        if missing_ok and response.status_code == 404 and _errcode(response) == "M_NOT_FOUND":
            return None
        raise _error(response, doing=doing, room_op=room_op)

    async def _user(self, user_id: str) -> _User | None:
        """The user's details, ``None`` if there is no such user."""
        body = await self._call("GET", f"/_synapse/admin/v2/users/{_q(user_id)}", doing="read user", missing_ok=True)
        return None if body is None else _User(user_id, body)

    async def _resolve(self, subject_id: str) -> _User | None:
        """Our account for this subject (by the SSO mapping only), ``None`` if there is none."""
        path = f"/_synapse/admin/v1/auth_providers/{_q(self._config.idp_id)}/users/{_q(subject_id)}"
        found = await self._call("GET", path, doing="find user by subject id", missing_ok=True)
        user_id = None if found is None else found.get("user_id")
        if not isinstance(user_id, str):
            return None
        return await self._user(user_id)

    async def _admin_user_id(self) -> str:
        """Who the admin token belongs to (``whoami``), asked once per connector."""
        if self._admin_id is None:
            body = await self._call("GET", "/_matrix/client/v3/account/whoami", doing="identify the admin") or {}
            user_id = body.get("user_id")
            if not isinstance(user_id, str):
                raise RejectedError("whoami: no user_id in the answer")
            self._admin_id = user_id
        return self._admin_id

    async def _joined_rooms(self, user_id: str) -> set[str]:
        path = f"/_synapse/admin/v1/users/{_q(user_id)}/joined_rooms"
        body = await self._call("GET", path, doing="list joined rooms") or {}
        rooms = body.get("joined_rooms")
        return {r for r in rooms if isinstance(r, str)} if isinstance(rooms, list) else set()

    async def _room_id(self, room: str) -> str:
        """A granted room as a room id: ids as they are, aliases through the room directory."""
        if room.startswith("!"):
            return room
        if not room.startswith("#"):
            raise RejectedError(f"group {room!r} is neither a Matrix room id (!…) nor a room alias (#…)")
        path = f"/_matrix/client/v3/directory/room/{_q(room)}"
        body = await self._call("GET", path, doing=f"resolve room alias {room}", missing_ok=True)
        room_id = None if body is None else body.get("room_id")
        if not isinstance(room_id, str):
            raise RejectedError(f"room alias {room!r} does not exist on the homeserver")
        return room_id

    # -- intents ------------------------------------------------------------------------------------

    async def update(self, ref: AccountRef, spec: AccountSpec, *, op_id: str) -> Result:
        """Create or bring the account to ``spec`` (also unlocks and reactivates), then its rooms."""
        user = await self._resolve(ref.subject_id)
        email = None if spec.email is None else canonical_email(spec.email)
        if user is None:
            user_id = f"@{self._localpart(spec.user_name)}:{self._config.server_name}"
            if await self._user(user_id) is not None:
                raise RejectedError(
                    f"{user_id} exists but is not linked to subject {ref.subject_id}: refusing to adopt it"
                )
            await self._check_email_free(email, user_id)
            await self._call(
                "PUT",
                f"/_synapse/admin/v2/users/{_q(user_id)}",
                doing="create user",
                json=self._create_body(ref, spec, email),
            )
            changed = True
        else:
            user_id = user.user_id
            body = self._changes(user, ref, spec, email)
            if "threepids" in body:
                await self._check_email_free(email, user_id)
            if body:
                await self._call("PUT", f"/_synapse/admin/v2/users/{_q(user_id)}", doing="update user", json=body)
            changed = bool(body)
        # an inactive (locked or deactivated) account keeps the rooms it has until it is active again
        rooms_changed = spec.active and await self._sync_rooms(user_id, spec.groups, new=user is None)
        return Result(Outcome.CHANGED if changed or rooms_changed else Outcome.UNCHANGED, user_id)

    async def suspend(self, ref: AccountRef, *, op_id: str) -> Result:
        """Lock the account: no sign-in, existing tokens refused while locked, all data kept."""
        user = await self._resolve(ref.subject_id)
        if user is None:
            return Result(Outcome.UNCHANGED, None)
        if user.locked or user.deactivated:
            return Result(Outcome.UNCHANGED, user.user_id)
        await self._call(
            "PUT", f"/_synapse/admin/v2/users/{_q(user.user_id)}", doing="lock user", json={"locked": True}
        )
        return Result(Outcome.CHANGED, user.user_id)

    async def revoke_sessions(self, ref: AccountRef, *, op_id: str) -> Result:
        """Delete every device, and with them every access and refresh token; CHANGED if any existed."""
        user = await self._resolve(ref.subject_id)
        if user is None:
            return Result(Outcome.UNCHANGED, None)
        base = f"/_synapse/admin/v2/users/{_q(user.user_id)}"
        listed = await self._call("GET", f"{base}/devices", doing="list devices") or {}
        devices = listed.get("devices")
        ids = (
            [d["device_id"] for d in devices if isinstance(d, dict) and isinstance(d.get("device_id"), str)]
            if isinstance(devices, list)
            else []
        )
        if not ids:
            return Result(Outcome.UNCHANGED, user.user_id)
        await self._call("POST", f"{base}/delete_devices", doing="delete devices", json={"devices": ids})
        return Result(Outcome.CHANGED, user.user_id)

    async def deprovision(self, ref: AccountRef, *, op_id: str) -> Result:
        """Deactivate the account for good (erasing it if configured); already deactivated is UNCHANGED."""
        user = await self._resolve(ref.subject_id)
        if user is None:
            return Result(Outcome.UNCHANGED, None)
        erase = self._config.deprovision_erase
        if user.deactivated and (user.body.get("erased") is True or not erase):
            return Result(Outcome.UNCHANGED, user.user_id)
        path = f"/_synapse/admin/v1/deactivate/{_q(user.user_id)}"
        await self._call("POST", path, doing="deactivate user", json={"erase": erase})
        return Result(Outcome.CHANGED, user.user_id)

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        """Every local user, deactivated and locked ones too, with our subject id where the mapping has one."""
        start = 0
        while True:
            params: dict[str, str | int] = {
                "from": start,
                "limit": self._config.page_size,
                "deactivated": "true",
                "locked": "true",
            }
            page = await self._call("GET", "/_synapse/admin/v2/users", doing="list users", params=params) or {}
            users = page.get("users")
            for entry in users if isinstance(users, list) else []:
                account = await self._remote_account(mapping_or_empty(entry))
                if account is not None:
                    yield account
            next_token = page.get("next_token")
            if not isinstance(next_token, str | int) or not str(next_token).isdigit():
                return
            start = int(next_token)

    # -- helpers ------------------------------------------------------------------------------------

    def _localpart(self, user_name: str) -> str:
        return localpart_for(
            user_name,
            drop_domain=self._config.localpart_drop_domain,
            prefix=self._config.localpart_prefix,
            server_name=self._config.server_name,
        )

    def _our_mapping(self, ref: AccountRef) -> dict[str, str]:
        return {"auth_provider": self._config.idp_id, "external_id": ref.subject_id}

    def _create_body(self, ref: AccountRef, spec: AccountSpec, email: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "external_ids": [self._our_mapping(ref)],
            "threepids": [] if email is None else [{"medium": "email", "address": email}],
        }
        if (name := _display_name(spec)) is not None:
            body["displayname"] = name
        if not spec.active:
            body["locked"] = True
        return body

    def _changes(self, user: _User, ref: AccountRef, spec: AccountSpec, email: str | None) -> dict[str, Any]:
        """The PUT body that brings ``user`` to ``spec``: only what differs, so ``{}`` means already so."""
        body: dict[str, Any] = {}
        name = _display_name(spec)
        if name is not None and user.body.get("displayname") != name:
            body["displayname"] = name
        threepids = user.pairs("threepids", "medium", "address")
        wanted = {p for p in threepids if p[0] != "email"} | ({("email", email)} if email else set())
        if wanted != threepids:
            body["threepids"] = [{"medium": m, "address": a} for m, a in sorted(wanted)]
        mappings = user.pairs("external_ids", "auth_provider", "external_id")
        ours = (self._config.idp_id, ref.subject_id)
        if ours not in mappings:  # never drop another provider's mapping: only add ours
            body["external_ids"] = [{"auth_provider": p, "external_id": e} for p, e in sorted(mappings | {ours})]
        if user.deactivated and spec.active:
            body["deactivated"] = False
        if user.locked != (not spec.active) and not (user.deactivated and not spec.active):
            body["locked"] = not spec.active
        return body

    async def _check_email_free(self, email: str | None, user_id: str) -> None:
        """Refuse an email another account holds: Synapse would silently move it to this one."""
        if email is None:
            return
        path = f"/_synapse/admin/v1/threepid/email/users/{_q(email)}"
        holder = await self._call("GET", path, doing="find the email's holder", missing_ok=True)
        other = None if holder is None else holder.get("user_id")
        if isinstance(other, str) and other != user_id:
            raise RejectedError(f"the email of {user_id} already belongs to another Matrix account")

    async def _sync_rooms(self, user_id: str, groups: frozenset[str], *, new: bool) -> bool:
        """Join the granted rooms and kick from managed rooms no longer granted; whether anything changed."""
        wanted = {await self._room_id(room) for room in sorted(groups)}
        joined = set() if new else await self._joined_rooms(user_id)
        to_leave = joined - wanted
        if to_leave:
            to_leave &= await self._joined_rooms(await self._admin_user_id())
        for room_id in sorted(wanted - joined):
            path = f"/_synapse/admin/v1/join/{_q(room_id)}"
            await self._call("POST", path, doing=f"join {room_id}", json={"user_id": user_id}, room_op=True)
        for room_id in sorted(to_leave):
            path = f"/_matrix/client/v3/rooms/{_q(room_id)}/kick"
            body = {"user_id": user_id, "reason": KICK_REASON}
            await self._call("POST", path, doing=f"remove from {room_id}", json=body, room_op=True)
        return bool(wanted - joined or to_leave)

    async def _remote_account(self, entry: Mapping[str, object]) -> RemoteAccount | None:
        """One listed user as a RemoteAccount, reading its details unless it is a guest."""
        user_id = entry.get("name")
        if not isinstance(user_id, str):
            return None
        active = entry.get("deactivated") is not True and entry.get("locked") is not True
        localpart = user_id[1:].split(":", 1)[0]
        if entry.get("is_guest") is True:
            return RemoteAccount(remote_id=user_id, user_name=localpart, subject_id=None, active=active)
        user = await self._user(user_id)
        if user is None:  # removed between the page and now
            return None
        subjects = sorted(
            e for p, e in user.pairs("external_ids", "auth_provider", "external_id") if p == self._config.idp_id
        )
        emails = sorted(a for m, a in user.pairs("threepids", "medium", "address") if m == "email")
        active = not user.deactivated and not user.locked
        rooms = frozenset(await self._joined_rooms(user_id)) if subjects and active else frozenset()
        return RemoteAccount(
            remote_id=user_id,
            user_name=localpart,
            subject_id=subjects[0] if subjects else None,
            active=active,
            email=emails[0] if emails else None,
            groups=rooms,
        )


def _display_name(spec: AccountSpec) -> str | None:
    """The display name to set: the spec's, else given and family name; ``None`` leaves Synapse's as it is."""
    if spec.display_name:
        return spec.display_name
    joined = " ".join(n for n in (spec.given_name, spec.family_name) if n)
    return joined or None


def _q(segment: str) -> str:
    """One URL path segment: user ids, room ids and aliases carry '@', ':', '!' and '#'."""
    return quote(segment, safe="")


def _errcode(response: httpx.Response) -> str | None:
    try:
        code = mapping_or_empty(response.json()).get("errcode")
    except ValueError:
        return None
    return code if isinstance(code, str) else None


def _error(response: httpx.Response, *, doing: str, room_op: bool) -> ConnectorError:
    """The base mapping, plus Synapse's ``retry_after_ms`` on 429 and room-level 403s as rejections."""
    error = error_for_response(response, doing=doing)
    if response.status_code == 429 and isinstance(error, RetryableError):
        hints = [error.retry_after]
        try:
            ms = mapping_or_empty(response.json()).get("retry_after_ms")
        except ValueError:
            ms = None
        if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
            hints.append(ms / 1000)
        known = [h for h in hints if h is not None]
        return RetryableError(error.detail, retry_after=max(known) if known else None)
    if room_op and response.status_code == 403:
        return RejectedError(f"{error.detail} (the room's power levels refuse the Entente admin)")
    return error
