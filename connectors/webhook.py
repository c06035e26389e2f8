"""Standard Webhooks (https://www.standardwebhooks.com, spec v1): signed JSON account events for in-house apps.

For an app that has no provisioning API of its own: Entente POSTs one signed event per intent to the
app's endpoint and the app applies it. Signing follows the Standard Webhooks specification:

- ``webhook-id``: the outbox ``op_id``, so it doubles as the idempotency key (a retry of the same task
  carries the same id; the spec tells receivers to deduplicate on it);
- ``webhook-timestamp``: integer Unix seconds (receivers refuse stale or future timestamps);
- ``webhook-signature``: ``v1,<base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))>``, where ``key``
  is the base64 part of the ``whsec_<base64>`` secret.

The body uses the spec's recommended envelope ``{"type", "timestamp", "data"}``::

    {"type": "account.updated",            # | account.suspended | account.sessions_revoked | account.deprovisioned
     "timestamp": "2025-01-01T00:00:00Z",
     "data": {"tenant_id": "...", "subject_id": "...", "remote_id": "..." | null,
              "account": {"user_name", "email", "display_name", "given_name", "family_name",
                          "roles": [...], "groups": [...], "active", "attributes": {...}}}}   # updated only

The receiver contract (all an in-house app must implement):

- Verify the signature (any Standard Webhooks library does it) and refuse with 401 when it fails;
  deduplicate by ``webhook-id``: a replayed id changes nothing and answers ``unchanged``.
- Key accounts by ``subject_id`` (never by email). ``account.updated`` is an upsert that also
  reactivates; suspend, revoke and deprovision of an unknown subject answer ``unchanged``.
- Answer 2xx with ``{"outcome": "changed" | "unchanged", "remote_id": "<app's id>" | null}``; a 2xx
  without a body counts as ``changed``. 429/5xx (with ``Retry-After`` if it likes) means "try again
  later", 401/403 "wrong secret", any other 4xx "this event will never be accepted".
- Optionally serve ``accounts_url``: a GET signed the same way over an empty body, answering
  ``{"accounts": [{"remote_id", "subject_id", "user_name", "email", "active", "roles", "groups"}],
  "next": "<URL of the next page>" | null}``. Without it, ``list_accounts`` raises ``UnsupportedError``
  (the app cannot be reconciled, only told). The GET signature does not cover the URL, so a captured
  listing request can be replayed for five minutes: it reads, never writes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx
from pydantic import Field, HttpUrl, SecretStr, field_validator

from connectors.base import (
    AccountRef,
    AccountSpec,
    ConnectorConfig,
    Outcome,
    RejectedError,
    RemoteAccount,
    Result,
    UnsupportedError,
    mapping_or_empty,
)
from connectors.http import HttpApi

__all__ = ["SECRET_PREFIX", "WebhookConnector", "WebhookConnectorConfig", "sign", "webhook_hmac_key"]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's fixed prefix, not a secret
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
"""The spec's key sizes: between 24 and 64 random bytes."""


def webhook_hmac_key(secret: str) -> bytes:
    """The HMAC key inside ``whsec_<base64>``; ValueError if the text is no such secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a Standard Webhooks secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the part after 'whsec_' is not valid base64") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"the secret must decode to {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, not {len(key)}")
    return key


def sign(*, key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (spec "Signature scheme", ``v1`` = HMAC-SHA256) for these exact bytes."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class WebhookConnectorConfig(ConnectorConfig):
    """One in-house app reached by Standard Webhooks."""

    kind: ClassVar[str] = "webhook"

    url: HttpUrl = Field(description="The app's webhook endpoint; every account event is POSTed here.")
    secret: SecretStr = Field(description="The shared signing secret, 'whsec_' + base64 of 24 to 64 random bytes.")
    accounts_url: HttpUrl | None = Field(
        default=None,
        description="Optional signed GET listing the app's accounts; without it the app cannot be reconciled.",
    )

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr) -> SecretStr:
        """Fail at load, not at the first event, when the secret is malformed."""
        webhook_hmac_key(value.get_secret_value())
        return value

    def open(self, http: httpx.AsyncClient) -> WebhookConnector:
        """Build the connector on the caller's client."""
        return WebhookConnector(self, http)


def _spec_body(spec: AccountSpec) -> dict[str, Any]:
    """The ``account`` object of an ``account.updated`` event: the whole desired state, sets sorted."""
    return {
        "user_name": spec.user_name,
        "email": spec.email,
        "display_name": spec.display_name,
        "given_name": spec.given_name,
        "family_name": spec.family_name,
        "roles": sorted(spec.roles),
        "groups": sorted(spec.groups),
        "active": spec.active,
        "attributes": dict(spec.attributes),
    }


def _strings(value: object) -> frozenset[str]:
    """A JSON list of strings as a set; anything else (or non-string items) ignored."""
    if not isinstance(value, list):
        return frozenset()
    return frozenset(item for item in value if isinstance(item, str))


def _optional_str(value: object) -> str | None:
    """A JSON string, or ``None`` for anything else."""
    return value if isinstance(value, str) else None


class WebhookConnector:
    """Sends one signed event per intent; the receiver's answer says whether anything changed."""

    kind: ClassVar[str] = "webhook"

    def __init__(self, config: WebhookConnectorConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._api = HttpApi(http)  # every URL is absolute: the endpoint, accounts_url and its next links
        self._key = webhook_hmac_key(config.secret.get_secret_value())

    def _headers(self, msg_id: str, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers for this message, timestamped now."""
        timestamp = int(time.time())
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key=self._key, msg_id=msg_id, timestamp=timestamp, body=body),
        }

    async def _send(self, method: str, url: str, *, msg_id: str, body: bytes, doing: str) -> httpx.Response:
        """One signed request of these exact bytes to an absolute URL; a 2xx answer or the mapped error."""
        headers = self._headers(msg_id, body)
        if body:
            headers["content-type"] = "application/json"
        return await self._api.send(method, url, doing=doing, content=body, headers=headers)

    async def _event(self, event_type: str, ref: AccountRef, *, op_id: str, account: dict[str, Any] | None) -> Result:
        """POST one event with ``op_id`` as ``webhook-id`` and read the receiver's outcome."""
        data: dict[str, Any] = {"tenant_id": ref.tenant_id, "subject_id": ref.subject_id, "remote_id": ref.remote_id}
        if account is not None:
            data["account"] = account
        envelope = {
            "type": event_type,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "data": data,
        }
        body = json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()
        doing = f"webhook {event_type} for subject {ref.subject_id}"
        response = await self._send("POST", str(self._config.url), msg_id=op_id, body=body, doing=doing)
        return self._result(response, ref, doing=doing)

    @staticmethod
    def _result(response: httpx.Response, ref: AccountRef, *, doing: str) -> Result:
        """The receiver contract: ``{"outcome", "remote_id"}``; a 2xx without a body means CHANGED."""
        if not response.content.strip():
            return Result(Outcome.CHANGED, ref.remote_id)
        try:
            answer = mapping_or_empty(response.json())
        except ValueError as exc:
            raise RejectedError(f"{doing}: the receiver answered {response.status_code} with non-JSON") from exc
        outcome = answer.get("outcome", Outcome.CHANGED.value)
        if outcome not in (Outcome.CHANGED.value, Outcome.UNCHANGED.value):
            raise RejectedError(f"{doing}: the receiver answered an unknown outcome {outcome!r}")
        remote_id = _optional_str(answer["remote_id"]) if "remote_id" in answer else ref.remote_id
        return Result(Outcome(outcome), remote_id)

    async def update(self, ref: AccountRef, spec: AccountSpec, *, op_id: str) -> Result:
        """``account.updated``: the receiver upserts by subject id and reactivates."""
        return await self._event("account.updated", ref, op_id=op_id, account=_spec_body(spec))

    async def suspend(self, ref: AccountRef, *, op_id: str) -> Result:
        """``account.suspended``: the receiver disables sign-in and keeps the account."""
        return await self._event("account.suspended", ref, op_id=op_id, account=None)

    async def revoke_sessions(self, ref: AccountRef, *, op_id: str) -> Result:
        """``account.sessions_revoked``: the receiver ends live sessions and tokens."""
        return await self._event("account.sessions_revoked", ref, op_id=op_id, account=None)

    async def deprovision(self, ref: AccountRef, *, op_id: str) -> Result:
        """``account.deprovisioned``: the receiver removes the account."""
        return await self._event("account.deprovisioned", ref, op_id=op_id, account=None)

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        """Follow ``accounts_url`` and its ``next`` links; UnsupportedError when no listing is configured."""
        if self._config.accounts_url is None:
            raise UnsupportedError("webhook: no accounts_url is configured, so the app's accounts cannot be listed")
        url: str | None = str(self._config.accounts_url)
        seen: set[str] = set()
        while url is not None:
            if url in seen:
                raise RejectedError(f"webhook listing: the receiver's next link loops back to {url}")
            seen.add(url)
            doing = "webhook account listing"
            response = await self._send("GET", url, msg_id=f"list_{uuid.uuid4().hex}", body=b"", doing=doing)
            try:
                page = mapping_or_empty(response.json())
            except ValueError as exc:
                raise RejectedError(f"{doing}: {url} answered non-JSON") from exc
            items = page.get("accounts")
            for item in items if isinstance(items, list) else []:
                account = _remote_account(mapping_or_empty(item))
                if account is not None:
                    yield account
            next_url = page.get("next")
            url = str(response.url.join(next_url)) if isinstance(next_url, str) and next_url else None

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the caller's."""


def _remote_account(item: Mapping[str, object]) -> RemoteAccount | None:
    """One listed account; items without a string ``remote_id`` are skipped (nothing to act on)."""
    remote_id = item.get("remote_id")
    if not isinstance(remote_id, str) or not remote_id:
        return None
    return RemoteAccount(
        remote_id=remote_id,
        user_name=_optional_str(item.get("user_name")),
        subject_id=_optional_str(item.get("subject_id")),
        active=item.get("active") is not False,
        email=_optional_str(item.get("email")),
        roles=_strings(item.get("roles")),
        groups=_strings(item.get("groups")),
    )
