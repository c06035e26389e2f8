"""The one interface every inbound IdP adapter implements, and the one identity type that crosses it.

After dex's CallbackConnector/SAMLConnector (the server owns state and passes in what it expects) and
SATOSA's InternalData (one internal type crosses between inbound and outbound modules).

Exception tree (mapped to a clear login error page at the edge, never a 500)::

    FederationError (BadRequest)  the upstream answer cannot be trusted or used
    ├── InvalidAssertion          bad signature, audience, issuer, time window, nonce/InResponseTo
    ├── ReplayDetected            an assertion or state seen before
    ├── UntrustedIssuer           the answer comes from an IdP not configured for this partner
    ├── UnknownPerson             a valid identity that binds to no active person of the partner
    └── UpstreamError             the IdP answered with an error (e.g. access_denied) or could not be reached
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from starlette.requests import Request
from starlette.responses import Response

from broker.errors import BadRequest

__all__ = [
    "FederatedIdentity",
    "FederationError",
    "IdPAdapter",
    "InvalidAssertion",
    "ReplayDetected",
    "UnknownPerson",
    "UntrustedIssuer",
    "UpstreamError",
]


@dataclass(frozen=True)
class FederatedIdentity:
    """Who the partner's IdP says logged in: the only thing adapters hand to the rest of Entente."""

    tenant_id: str
    """The partner whose IdP connection produced this identity."""
    issuer: str
    """OIDC ``iss`` or the SAML IdP's entityID."""
    subject: str
    """OIDC ``sub`` or a persistent NameID: with ``issuer``, the join key. Never an email."""
    email: str | None
    email_verified: bool
    """OIDC ``email_verified``; for SAML, True only when the connection's config vouches for it."""
    groups: frozenset[str] = field(default_factory=frozenset)
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    authn_at: dt.datetime | None = None
    session_ref: str | None = None
    """Upstream ``sid`` / SAML SessionIndex, for upstream logout."""


class FederationError(BadRequest):
    """The upstream answer cannot be used; ``detail`` is safe to show the person logging in."""


class InvalidAssertion(FederationError):
    pass


class ReplayDetected(FederationError):
    pass


class UntrustedIssuer(FederationError):
    pass


class UnknownPerson(FederationError):
    """A valid upstream identity with no active person of that partner to bind to."""


class UpstreamError(FederationError):
    """The IdP refused the login (an RFC 6749 §4.1.2.1 / §5.2 error) or did not answer usably."""


class IdPAdapter(Protocol):
    """One configured upstream IdP of one partner."""

    protocol: ClassVar[Literal["oidc", "saml"]]

    async def begin(self, request: Request, *, state: str, nonce: str, login_hint: str | None = None) -> Response:
        """Send the browser to the IdP (302, or an auto-posting form for SAML), passing on the email
        the person already gave (OIDC ``login_hint``) so they are not asked twice."""
        ...

    async def complete(self, request: Request, *, state: str, nonce: str) -> FederatedIdentity:
        """Verify the IdP's answer completely or raise a FederationError subclass."""
        ...
