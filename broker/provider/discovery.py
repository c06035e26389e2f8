"""OpenID Connect Discovery 1.0 §3 provider metadata (also served as RFC 8414 authorization server metadata).

The issuer is ``{public_base_url}/oidc``; its document is at ``/oidc/.well-known/openid-configuration``
(Discovery §4.1: issuer + ``/.well-known/openid-configuration``) and at
``/.well-known/oauth-authorization-server/oidc`` (RFC 8414 §3.1: the well-known segment inserted
before the issuer's path). Every endpoint URL is built from the configured public base URL, never
from the request's Host header.
"""

from __future__ import annotations

from typing import Any

from broker.provider.clients import CONFIDENTIAL_METHODS, SUPPORTED_SCOPES
from broker.provider.keys import ALGORITHM
from broker.settings import Settings

__all__ = ["CLAIMS_SUPPORTED", "PATHS", "issuer_of", "provider_metadata"]

PATHS = {
    "authorization_endpoint": "/authorize",
    "token_endpoint": "/token",
    "userinfo_endpoint": "/userinfo",
    "jwks_uri": "/jwks",
    "revocation_endpoint": "/revoke",
    "introspection_endpoint": "/introspect",
    "end_session_endpoint": "/logout",
}
"""Endpoint paths under the issuer (``/oidc``)."""
CLAIMS_SUPPORTED = [
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "sid",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "email",
    "email_verified",
    "partner",
    "groups",
    "roles",
]


def issuer_of(settings: Settings) -> str:
    """The issuer identifier (OIDC Core §2 ``iss``): the public base URL + ``/oidc``, no trailing slash."""
    return f"{settings.public_base_url.rstrip('/')}/oidc"


def provider_metadata(settings: Settings) -> dict[str, Any]:
    """The discovery document; authlib's ``OpenIDProviderMetadata.validate()`` accepts it (tested)."""
    issuer = issuer_of(settings)
    return {
        "issuer": issuer,
        **{name: f"{issuer}{path}" for name, path in PATHS.items()},
        "scopes_supported": list(SUPPORTED_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "token_endpoint_auth_methods_supported": [*CONFIDENTIAL_METHODS, "none"],
        "revocation_endpoint_auth_methods_supported": [*CONFIDENTIAL_METHODS, "none"],
        "introspection_endpoint_auth_methods_supported": list(CONFIDENTIAL_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS_SUPPORTED,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "prompt_values_supported": ["none", "login"],
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }
