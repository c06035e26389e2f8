"""OpenID Connect Discovery 1.0 §3–§4 and RFC 8414 metadata; the JWK Set (RFC 7517 §5)."""

from __future__ import annotations

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9207 import AuthorizationServerMetadata as IssuerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata
from fastapi.testclient import TestClient

from tests.provider.conftest import ISSUER

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def test_discovery_document_is_valid_openid_provider_metadata(browser: TestClient) -> None:
    response = browser.get("/oidc/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    OpenIDProviderMetadata(document).validate()
    AuthorizationServerMetadata(document).validate(metadata_classes=[IssuerMetadata])
    assert document["issuer"] == ISSUER
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "revocation_endpoint",
                 "introspection_endpoint", "end_session_endpoint"):  # fmt: skip
        assert document[name].startswith(f"{ISSUER}/"), name
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["backchannel_logout_supported"] is True
    assert document["backchannel_logout_session_supported"] is True
    assert "none" not in document["introspection_endpoint_auth_methods_supported"]
    assert {"partner", "groups", "roles", "sid"} <= set(document["claims_supported"])


def test_rfc8414_path_serves_the_same_document(browser: TestClient) -> None:
    oidc = browser.get("/oidc/.well-known/openid-configuration").json()
    assert browser.get("/.well-known/oauth-authorization-server/oidc").json() == oidc


def test_endpoints_are_built_from_the_public_base_url_not_the_host_header(browser: TestClient) -> None:
    document = browser.get("/oidc/.well-known/openid-configuration", headers={"Host": "evil.example"}).json()
    assert document["issuer"] == ISSUER and document["token_endpoint"] == f"{ISSUER}/token"


def test_jwks_has_public_rs256_signing_keys_only(browser: TestClient) -> None:
    response = browser.get("/oidc/jwks")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys, "at least the signing key is published"
    for key in keys:
        assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
        assert key["kid"] and key["n"] and key["e"] == "AQAB"
        assert not PRIVATE_MEMBERS & set(key), key
        assert len(key["n"]) >= 342  # 2048-bit modulus, base64url
    assert len({key["kid"] for key in keys}) == len(keys)
