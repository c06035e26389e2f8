"""OpenID Connect Discovery 1.0 §4 provider metadata and the IdP's signing keys (RFC 7517 JWK Set).

Both are fetched with the caller's ``httpx.AsyncClient`` and kept for ``ttl`` seconds. Keys follow
the IdP's rotation (OIDC Core §10.1.1): a ``kid`` not in the cached set refetches the set once,
at once, before the token is refused. A refetch that fails keeps nothing stale past its ``ttl``.

Metadata is checked with authlib's ``OpenIDProviderMetadata`` (plus RFC 9207's
``authorization_response_iss_parameter_supported``), and its ``issuer`` must equal the configured
issuer exactly (Discovery §4.3), else the IdP is an ``UntrustedIssuer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oauth2 import rfc9207
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from broker.federation.base import InvalidAssertion, UntrustedIssuer, UpstreamError

__all__ = ["KeyCache", "ProviderMetadata", "fetch_json", "fetch_metadata"]

WELL_KNOWN = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 512 * 1024
"""Discovery documents and key sets are small; a larger answer is refused rather than parsed."""


@dataclass(frozen=True)
class ProviderMetadata:
    """What Entente uses of an IdP's discovery document (already validated)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    id_token_algorithms: frozenset[str]
    """``id_token_signing_alg_values_supported``."""
    token_endpoint_auth_methods: tuple[str, ...]
    """``token_endpoint_auth_methods_supported``; Discovery's default is ``client_secret_basic``."""
    iss_parameter_supported: bool
    """RFC 9207 §3: the IdP puts ``iss`` in every authorization response, so its absence is an attack."""


async def fetch_json(http: httpx.AsyncClient, url: str, *, what: str, **kwargs: Any) -> dict[str, Any]:
    """GET a JSON object, or ``UpstreamError`` naming ``what`` (never an httpx or JSON exception)."""
    try:
        response = await http.get(url, **kwargs)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"the identity provider's {what} could not be fetched ({type(exc).__name__})") from exc
    if response.status_code != 200:
        raise UpstreamError(f"the identity provider's {what} answered HTTP {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise UpstreamError(f"the identity provider's {what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        body = response.json()
    except ValueError as exc:
        raise UpstreamError(f"the identity provider's {what} is not JSON") from exc
    if not isinstance(body, dict):
        raise UpstreamError(f"the identity provider's {what} is not a JSON object")
    return body


def _strings(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else default


async def fetch_metadata(http: httpx.AsyncClient, issuer: str) -> ProviderMetadata:
    """Fetch and validate ``<issuer>/.well-known/openid-configuration`` (Discovery §4.1, §4.3)."""
    doc = await fetch_json(http, issuer.rstrip("/") + WELL_KNOWN, what="discovery document")
    if doc.get("issuer") != issuer:
        raise UntrustedIssuer(
            f"the discovery document of {issuer} names the issuer {doc.get('issuer')!r}: it must be identical"
        )
    metadata = OpenIDProviderMetadata(doc)
    try:
        metadata.validate(metadata_classes=[rfc9207.AuthorizationServerMetadata])
    except ValueError as exc:
        raise UpstreamError(f"the discovery document of {issuer} is invalid: {exc}") from exc
    for name in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(doc.get(name), str):
            raise UpstreamError(f"the discovery document of {issuer} has no {name}")
    userinfo = doc.get("userinfo_endpoint")
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc["jwks_uri"],
        userinfo_endpoint=userinfo if isinstance(userinfo, str) else None,
        id_token_algorithms=frozenset(_strings(doc.get("id_token_signing_alg_values_supported"), ("RS256",))),
        token_endpoint_auth_methods=_strings(
            doc.get("token_endpoint_auth_methods_supported"), ("client_secret_basic",)
        ),
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
    )


class KeyCache:
    """The IdP's JWK Set, refetched after ``ttl`` seconds or once when a token names an unknown ``kid``."""

    def __init__(self, jwks_uri: str, *, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._uri = jwks_uri
        self._ttl = ttl
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self.fetches = 0
        """How many times the set was fetched (observable for tests of rotation)."""

    async def _fetch(self, http: httpx.AsyncClient) -> KeySet:
        doc = await fetch_json(http, self._uri, what="signing keys (JWKS)")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise UpstreamError("the identity provider's JWKS has no 'keys' array")
        public = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        try:
            key_set = KeySet.import_key_set({"keys": public})
        except (JoseError, ValueError, TypeError) as exc:
            raise UpstreamError(f"the identity provider's JWKS cannot be read ({type(exc).__name__})") from exc
        self._keys, self._fetched_at = key_set, self._clock()
        self.fetches += 1
        return key_set

    @staticmethod
    def _pick(keys: KeySet, kid: str | None) -> Key | None:
        if kid is None:
            return keys.keys[0] if len(keys.keys) == 1 else None
        return next((key for key in keys.keys if key.kid == kid), None)

    async def key_for(self, http: httpx.AsyncClient, kid: str | None) -> Key:
        """The key a JWS header's ``kid`` names (with no ``kid``: the only key), refetching once if unknown."""
        keys = self._keys
        refreshed = False
        if keys is None or self._clock() - self._fetched_at > self._ttl:
            keys, refreshed = await self._fetch(http), True
        key = self._pick(keys, kid)
        if key is None and not refreshed:
            key = self._pick(await self._fetch(http), kid)
        if key is None:
            named = f"key '{kid}'" if kid is not None else "a key without 'kid' (the JWKS has several keys)"
            raise InvalidAssertion(f"the ID token is signed with {named}, which the identity provider does not publish")
        return key
