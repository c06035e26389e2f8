"""OpenID Connect Core 1.0 §3.1 Authorization Code Flow, as a relying party of one partner's IdP.

RFC 6749 §4.1 (code grant) with RFC 7636 PKCE (S256 only), RFC 9207 (``iss`` in the authorization
response), OIDC Discovery 1.0 (``broker.federation.discovery``) and OIDC Core §3.1.3.7 ID token
validation (``broker.federation.idtoken``); authlib builds the protocol messages, joserfc verifies.

The server owns the login's state (after dex's ``CallbackConnector``): ``broker.federation.api``
makes ``state`` and a 256-bit per-login secret, keeps both in a sealed cookie, and passes the secret
to this adapter as ``nonce``. The adapter derives from that secret, with HMAC-SHA256 under distinct
labels, the ``nonce`` it sends (OIDC Core §3.1.2.1) and the PKCE ``code_verifier`` (RFC 7636 §4.1:
43 characters of base64url). The verifier thus never appears in a URL, and knowing the nonce (which
travels through the browser) reveals nothing of it.

Failures are ``FederationError`` subclasses (``broker.federation.base``), never httpx or JOSE
exceptions, so the login edge renders each as a clear page.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode

import certifi
import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.federation.base import (
    FederatedIdentity,
    InvalidAssertion,
    ReplayDetected,
    UntrustedIssuer,
    UpstreamError,
)
from broker.federation.discovery import KeyCache, ProviderMetadata, fetch_json, fetch_metadata
from broker.federation.idtoken import ALLOWED_ALGORITHMS, IdTokenCheck, validate_id_token

__all__ = ["OIDCAdapter", "OIDCConfig", "derive_code_verifier", "derive_nonce"]

_PROTOCOL_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "azp", "at_hash", "c_hash", "sid", "auth_time", "jti"}
)
MAX_HINT = 256
MAX_SESSION_REF = 512
"""Longest upstream ``sid`` kept (``LoginSession.upstream_session``); a longer one is dropped."""


@dataclass(frozen=True)
class OIDCConfig:
    """One OIDC IdP connection, as the adapter needs it (the secret already unsealed, in memory only)."""

    connection_id: str
    tenant_id: str
    issuer: str
    client_id: str
    client_secret: SecretStr
    redirect_uri: str
    """``<public base URL>/login/callback/<connection id>``: a distinct path per connection (mix-up defence)."""
    timeout: float = 10.0
    metadata_ttl: float = 3600.0
    leeway: int = 60
    max_age: int = 600
    """Oldest acceptable ID token ``iat``, in seconds: how long a login may take."""
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    needed_claims: tuple[str, ...] = ("email",)
    """What identity binding reads beyond ``sub`` (``broker.federation.binding``): userinfo (OIDC Core
    §5.3, optional for a relying party) is fetched only when the ID token lacks one of these. Empty
    for an ``externalId`` binding without JIT, which needs nothing but the ID token's ``sub``."""


def _derive(secret: str, label: bytes) -> str:
    digest = hmac.new(secret.encode(), label, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def derive_nonce(secret: str) -> str:
    """The ``nonce`` sent to the IdP for the login whose secret this is."""
    return _derive(secret, b"entente/oidc/nonce")


def derive_code_verifier(secret: str) -> str:
    """RFC 7636 §4.1 ``code_verifier`` (43 base64url characters, 256 bits) of the login whose secret this is."""
    return _derive(secret, b"entente/oidc/pkce-verifier")


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process (httpx would build one per client, which costs milliseconds)."""
    return ssl.create_default_context(cafile=certifi.where())


def _basic_credentials(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return ()


class OIDCAdapter:
    """``IdPAdapter`` for one OIDC connection; keeps that IdP's metadata and keys between logins."""

    protocol: ClassVar[Literal["oidc", "saml"]] = "oidc"

    def __init__(
        self,
        config: OIDCConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``transport`` replaces the network (tests); ``clock`` gives seconds since the epoch."""
        self.config = config
        self._transport = transport
        self._clock = clock
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._keys: KeyCache | None = None
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        """The adapter's one client, so logins reuse its pooled keep-alive connections to the IdP.

        A pooled connection must not outlive its event loop (the app may run each request on its
        own loop, as the test client does): a client made on another loop is dropped, unawaited,
        and a new one made on this loop. ``aclose`` closes the current one at shutdown.
        """
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.is_closed or self._client_loop is not loop:
            if self._transport is not None:
                client = httpx.AsyncClient(transport=self._transport, timeout=self.config.timeout)
            else:
                client = httpx.AsyncClient(verify=_tls(), timeout=self.config.timeout)
            self._client, self._client_loop = client, loop
        return client

    async def aclose(self) -> None:
        """Close the shared client (app shutdown, or this adapter superseded), if it belongs to this loop."""
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is not None and not client.is_closed and loop is asyncio.get_running_loop():
            await client.aclose()

    async def metadata(self, http: httpx.AsyncClient) -> ProviderMetadata:
        """The IdP's validated discovery document, refetched after ``metadata_ttl``."""
        now = time.monotonic()
        if self._metadata is None or now - self._metadata_at > self.config.metadata_ttl:
            metadata = await fetch_metadata(http, self.config.issuer)
            if self._keys is None or (self._metadata and self._metadata.jwks_uri != metadata.jwks_uri):
                self._keys = KeyCache(metadata.jwks_uri, ttl=self.config.metadata_ttl)
            self._metadata, self._metadata_at = metadata, now
        return self._metadata

    @property
    def keys(self) -> KeyCache | None:
        """The IdP's key cache, once the metadata was fetched."""
        return self._keys

    async def begin(self, request: Request, *, state: str, nonce: str, login_hint: str | None = None) -> Response:
        """303 to the IdP's authorization endpoint (OIDC Core §3.1.2.1) with PKCE S256.

        ``nonce`` is the login's secret (see the module docstring); ``login_hint`` is passed on to the IdP.
        """
        metadata = await self.metadata(self._http())
        url = prepare_grant_uri(
            metadata.authorization_endpoint,
            self.config.client_id,
            "code",
            redirect_uri=self.config.redirect_uri,
            scope=" ".join(self.config.scopes),
            state=state,
            nonce=derive_nonce(nonce),
            code_challenge=create_s256_code_challenge(derive_code_verifier(nonce)),
            code_challenge_method="S256",
            login_hint=login_hint if login_hint and len(login_hint) <= MAX_HINT else None,
        )
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})

    def _check_response(self, request: Request, metadata: ProviderMetadata, state: str) -> str:
        """RFC 9207 ``iss``, then ``state``, then an error response; returns the code."""
        params = request.query_params
        iss = params.get("iss")
        if iss is not None and iss != metadata.issuer:
            raise UntrustedIssuer(f"the sign-in response comes from {iss!r}, not from {metadata.issuer!r} (RFC 9207)")
        if iss is None and metadata.iss_parameter_supported:
            raise UntrustedIssuer("the sign-in response lacks the 'iss' its identity provider always sends (RFC 9207)")
        received = params.get("state") or ""
        if not hmac.compare_digest(received.encode(), state.encode()):
            raise ReplayDetected("this sign-in response does not belong to the sign-in started in this browser")
        error = params.get("error")
        if error is not None:
            description = (params.get("error_description") or "")[:200]
            raise UpstreamError(
                f"your identity provider did not sign you in: {error[:64]}"
                + (f" ({description})" if description else "")
            )
        code = params.get("code")
        if not code:
            raise InvalidAssertion("the sign-in response carries no authorization code")
        return code

    async def _redeem(
        self, http: httpx.AsyncClient, metadata: ProviderMetadata, code: str, secret: str
    ) -> dict[str, Any]:
        """RFC 6749 §4.1.3 token request with the PKCE verifier; client_secret_basic unless only post is offered."""
        body = prepare_token_request(
            "authorization_code",
            code=code,
            redirect_uri=self.config.redirect_uri,
            code_verifier=derive_code_verifier(secret),
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        client_secret = self.config.client_secret.get_secret_value()
        methods = metadata.token_endpoint_auth_methods
        if "client_secret_basic" in methods or "client_secret_post" not in methods:
            headers["Authorization"] = _basic_credentials(self.config.client_id, client_secret)
        else:
            body += "&" + urlencode({"client_id": self.config.client_id, "client_secret": client_secret})
        try:
            response = await http.post(metadata.token_endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"the identity provider's token endpoint did not answer ({type(exc).__name__})"
            ) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise UpstreamError(
                f"the identity provider's token endpoint answered HTTP {response.status_code}, not JSON"
            )
        if response.status_code != 200:
            error = payload.get("error")
            code_text = error[:64] if isinstance(error, str) else "error"
            raise UpstreamError(f"the identity provider refused to redeem the sign-in code: {code_text}")
        if not isinstance(payload.get("id_token"), str):
            raise InvalidAssertion("the identity provider returned no ID token (is 'openid' an allowed scope?)")
        return payload

    async def _userinfo(
        self, http: httpx.AsyncClient, metadata: ProviderMetadata, access_token: str, sub: str
    ) -> dict[str, Any]:
        """OIDC Core §5.3: claims the ID token left out (e.g. ``email``); ``sub`` must match (§5.3.4)."""
        if metadata.userinfo_endpoint is None:
            return {}
        claims = await fetch_json(
            http, metadata.userinfo_endpoint, what="userinfo", headers={"Authorization": f"Bearer {access_token}"}
        )
        if claims.get("sub") != sub:
            raise InvalidAssertion("the userinfo 'sub' differs from the ID token's (token substitution)")
        return claims

    async def complete(self, request: Request, *, state: str, nonce: str) -> FederatedIdentity:
        """Check the authorization response, redeem the code, validate the ID token (§3.1.3.7); ask
        userinfo only for claims binding needs that the ID token lacks (``OIDCConfig.needed_claims``)."""
        http = self._http()
        metadata = await self.metadata(http)
        code = self._check_response(request, metadata, state)
        tokens = await self._redeem(http, metadata, code, nonce)
        access_token = tokens.get("access_token") if isinstance(tokens.get("access_token"), str) else None
        algorithms = metadata.id_token_algorithms & ALLOWED_ALGORITHMS
        check = IdTokenCheck(
            issuer=metadata.issuer,
            client_id=self.config.client_id,
            nonce=derive_nonce(nonce),
            algorithms=algorithms,
            now=int(self._clock()),
            leeway=self.config.leeway,
            max_age=self.config.max_age,
            access_token=access_token,
        )
        assert self._keys is not None  # set with the metadata
        claims = await validate_id_token(tokens["id_token"], check=check, keys=self._keys, http=http)
        if access_token is not None and any(name not in claims for name in self.config.needed_claims):
            extra = await self._userinfo(http, metadata, access_token, claims["sub"])
            if isinstance(extra.get("email"), str):
                claims = {**claims, "email": extra["email"], "email_verified": extra.get("email_verified")}
            claims = {**extra, **claims}
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> FederatedIdentity:
        """The one identity type that leaves the adapter: ``email_verified`` only if JSON ``true``;
        ``authn_at`` is ``auth_time`` when it is a plausible time, else ``iat`` (already checked)."""
        authn = claims.get("auth_time")
        if isinstance(authn, bool) or not isinstance(authn, int | float) or not 0 < authn <= claims["iat"] + 3600:
            authn = claims["iat"]
        email = claims.get("email")
        sid = claims.get("sid")
        if not isinstance(sid, str) or len(sid) > MAX_SESSION_REF:
            sid = None
        return FederatedIdentity(
            tenant_id=self.config.tenant_id,
            issuer=claims["iss"],
            subject=claims["sub"],
            email=email if isinstance(email, str) and email else None,
            email_verified=claims.get("email_verified") is True,
            groups=frozenset(_strings(claims.get("groups"))),
            attributes={
                name: _strings(value)
                for name, value in claims.items()
                if name not in _PROTOCOL_CLAIMS and _strings(value)
            },
            authn_at=dt.datetime.fromtimestamp(authn, dt.UTC),
            session_ref=sid,
        )
