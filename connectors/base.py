"""The one narrow interface every downstream workspace connector implements.

Only frozen dataclasses cross it: no ORM rows, no HTTP requests, no policy. A connector translates
one intent (make this account look like this; suspend it; end its sessions; remove it) into the
workspace's own API and reports whether anything changed. It never retries: the outbox worker owns
retries, ordering, pacing and dead letters, so a connector raises and lets the worker decide.

Exception tree (the worker maps each leaf to one behaviour)::

    ConnectorError              any failure talking to the workspace
    ├── RetryableError          timeout, connection refused, 5xx, 429: try again (``retry_after`` seconds if known)
    ├── RejectedError           the workspace will refuse every retry (4xx on our request): dead-letter, alert
    ├── CredentialsError        our credentials were refused (401/403): pause the workspace, alert
    └── UnsupportedError        the workspace cannot do this at all: the engine applies the fallback, audited

Idempotency: a repeated call returns ``Outcome.UNCHANGED``; suspend, revoke_sessions and deprovision
of an absent account also return ``UNCHANGED``. ``op_id`` is the outbox task id; connectors send it
as the workspace's idempotency key where the workspace has one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Protocol

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict

__all__ = [
    "AccountRef",
    "AccountSpec",
    "Connector",
    "ConnectorConfig",
    "ConnectorError",
    "CredentialsError",
    "NameSet",
    "Outcome",
    "RejectedError",
    "RemoteAccount",
    "Result",
    "RetryableError",
    "UnsupportedError",
    "error_for_response",
    "mapping_or_empty",
    "parse_retry_after",
]


class Outcome(StrEnum):
    """What a call did. ``UNCHANGED`` means "already so" and is a success."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class AccountRef:
    """Which person this is about, in Entente's terms and (once known) the workspace's.

    Accounts are matched by ``subject_id`` (stored as the workspace's externalId or equivalent) or
    ``remote_id``, never by email: an email can be reassigned to someone else.
    """

    tenant_id: str
    """The partner's id in Entente."""
    subject_id: str
    """The person's Entente id (the SCIM User id in the partner's tenant)."""
    remote_id: str | None = None
    """The workspace's id for the account, once a previous call returned it; ``None`` before."""


@dataclass(frozen=True)
class AccountSpec:
    """How the account should look in the workspace: the desired state, never a delta."""

    user_name: str
    """A stable, unique login name (the partner's SCIM userName)."""
    email: str | None
    """A verified-domain work email, or ``None``. Never used to find an account."""
    display_name: str | None
    given_name: str | None = None
    family_name: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    """Workspace roles the policies grant (e.g. ``member``, ``admin``)."""
    groups: frozenset[str] = field(default_factory=frozenset)
    """Workspace-side groups, rooms or teams the policies grant, by their workspace name or id."""
    active: bool = True
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Workspace-specific values the workspace config maps from SCIM (e.g. a GitHub login), by name."""


@dataclass(frozen=True)
class Result:
    """The outcome of one call and the workspace's id for the account (``None`` if it has none or it is gone)."""

    outcome: Outcome
    remote_id: str | None = None


@dataclass(frozen=True)
class RemoteAccount:
    """One account as the workspace lists it, ours or not: what reconciliation compares with our grants."""

    remote_id: str
    user_name: str | None
    subject_id: str | None
    """Our ``subject_id`` if the workspace stores it (externalId …); ``None`` for accounts we never made."""
    active: bool
    email: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)


class ConnectorError(Exception):
    """The workspace could not be told. ``detail`` is safe to show operators (no secrets)."""

    retryable: ClassVar[bool] = False

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RetryableError(ConnectorError):
    """Transient: timeout, refused connection, 5xx or 429. ``retry_after`` is the workspace's hint in seconds."""

    retryable = True

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RejectedError(ConnectorError):
    """The workspace refused the request itself; retrying the same request will not help."""


class CredentialsError(ConnectorError):
    """The workspace refused our credentials: every task for it would fail until an operator fixes them."""


class UnsupportedError(ConnectorError):
    """The workspace has no way to do this (e.g. no session revocation API)."""


class Connector(Protocol):
    """One workspace instance. Every method is idempotent; none retries."""

    kind: ClassVar[str]

    async def update(self, ref: AccountRef, spec: AccountSpec, *, op_id: str) -> Result:
        """Create the account or bring it to ``spec`` (upsert); also reactivates a suspended account."""
        ...

    async def suspend(self, ref: AccountRef, *, op_id: str) -> Result:
        """Disable sign-in but keep the account and its data, so a rejoiner can be restored."""
        ...

    async def revoke_sessions(self, ref: AccountRef, *, op_id: str) -> Result:
        """End every live session and token of the account in the workspace."""
        ...

    async def deprovision(self, ref: AccountRef, *, op_id: str) -> Result:
        """Remove the account (or deactivate it for good where the workspace cannot delete)."""
        ...

    def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        """Every account the workspace has, ours or not, paged through lazily."""
        ...

    async def aclose(self) -> None:
        """Release what ``open`` acquired (not the shared HTTP client, which the caller owns)."""
        ...


def _names(value: object) -> object:
    """A ``--set KEY=VALUE`` string as a list of names: a JSON list, else comma-separated; other values as they are."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)  # a ValueError becomes the field's validation error
    return [name.strip() for name in text.split(",") if name.strip()]


NameSet = Annotated[frozenset[str], BeforeValidator(_names)]
"""A config field holding a set of names (groups, teams). From ``--set`` it is written ``a,b`` or, for names
containing commas, as a JSON list ``["Sales, EMEA","b"]``; stored configs hold a JSON list."""


class ConnectorConfig(BaseModel):
    """Typed, validated configuration of one connector kind; secrets are ``SecretStr``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[str]
    """The registry key of this config's connector kind: a class constant, never a field or a stored value."""

    def open(self, http: httpx.AsyncClient) -> Connector:
        """Build the connector on a caller-owned HTTP client (timeouts and pooling are the caller's)."""
        raise NotImplementedError  # each kind overrides; the base class is never registered


def parse_retry_after(response: httpx.Response) -> float | None:
    """RFC 9110 §10.2.3 ``Retry-After`` as seconds (delay-seconds or an HTTP-date), ``None`` if absent or bad.

    An HTTP-date in the past gives ``0.0``. Every connector reads the header through this function.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are UTC (RFC 9110 §5.6.7)
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def error_for_response(response: httpx.Response, *, doing: str) -> ConnectorError:
    """Map a failed HTTP response to the exception tree, so every HTTP connector classifies alike."""
    status = response.status_code
    detail = f"{doing}: HTTP {status} {response.text[:300]}"
    if status == 429 or status >= 500 or status == 408:
        return RetryableError(detail, retry_after=parse_retry_after(response))
    if status in (401, 403):
        return CredentialsError(detail)
    return RejectedError(detail)


def mapping_or_empty(value: object) -> Mapping[str, object]:
    """``value`` if it is a JSON object, else ``{}``: for reading untrusted workspace responses."""
    return value if isinstance(value, Mapping) else {}
