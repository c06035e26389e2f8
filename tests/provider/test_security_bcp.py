"""RFC 9700 (Best Current Practice for OAuth 2.0 Security), Entente as the authorization server.

One negative test per item that had none elsewhere, each named after the section it checks;
``tests/SECURITY.md`` maps every section to its tests (here, in the other provider tests, or in
``tests/federation`` for Entente as a client of partner IdPs) or says why it does not apply.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session

from broker.errors import InvalidValue
from broker.provider.clients import add_client, sha256_hex
from broker.provider.models import RefreshToken, TokenFamily
from tests.provider.conftest import ISSUER, OPERATOR, World, query_of, verify_jwt

ATTACKER = "https://attacker.example/callback"


def _refused(response: httpx.Response, error: str, status: int = 400) -> dict[str, Any]:
    """An RFC 6749 §5.2 JSON refusal, never a redirect."""
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    return body


def _cannot_be_framed(response: httpx.Response) -> None:
    assert response.headers["x-frame-options"] == "DENY", response.headers
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.headers


# --- §2.1.2 implicit, §2.4 ROPC, §4.15 client credentials ------------------------------------------


@pytest.mark.parametrize("response_type", ["token", "id_token token", "code token", "code id_token token"])
def test_2_1_2_response_types_issuing_tokens_in_the_url_are_refused(world: World, response_type: str) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    response = rp.authorize(response_type=response_type)
    location = response.headers["location"]
    assert location.startswith(f"{rp.redirect_uri}?") and "#" not in location
    params = query_of(response)
    assert params["error"] == "unsupported_response_type" and params["iss"] == ISSUER
    assert not {"access_token", "id_token", "code"} & set(params)


def test_2_4_resource_owner_password_grant_is_refused(world: World) -> None:
    alice = world.person("alice")
    rp = world.client()
    response = rp.token({"grant_type": "password", "username": alice["userName"], "password": "secret"})
    _refused(response, "unsupported_grant_type")
    document = world.browser.get("/oidc/.well-known/openid-configuration").json()
    assert document["grant_types_supported"] == ["authorization_code", "refresh_token"]


def test_4_15_no_token_without_a_resource_owner(world: World) -> None:
    """No client credentials grant: every access token names a person, never a client (§4.15.1)."""
    rp = world.client()
    _refused(rp.token({"grant_type": "client_credentials", "scope": "openid"}), "unsupported_grant_type")


# --- §2.1, §2.6, §4.1 redirect URIs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://rp.example/cb", "must use https"),
        ("https://rp.example/cb#x", "must not have a fragment"),
        ("rp.example/cb", "absolute https URL"),
        ("javascript:alert(1)", "absolute https URL"),
    ],
)
def test_2_6_registration_refuses_redirect_uris_that_would_leak_the_response(
    world: World, uri: str, reason: str
) -> None:
    with Session(world.engine) as session, pytest.raises(InvalidValue, match=reason):
        add_client(session, slug="rp-refused", workspace_slug=world.workspace.slug, redirect_uris=[uri], actor=OPERATOR)


def test_2_6_loopback_http_is_the_only_http_redirect_allowed(world: World) -> None:
    with Session(world.engine, expire_on_commit=False) as session:
        added = add_client(
            session,
            slug=f"rp-loop-{world.workspace.slug[-8:]}",
            workspace_slug=world.workspace.slug,
            redirect_uris=["http://127.0.0.1:8765/cb"],
            actor=OPERATOR,
        )
    assert added.client.redirect_uris == ["http://127.0.0.1:8765/cb"]


# --- §4.11.2 the authorization server as an open redirector ----------------------------------------


@pytest.mark.parametrize(
    ("attack", "error", "description"),
    [
        ({"response_type": "token"}, "unsupported_response_type", "token"),
        ({"prompt": "none"}, "invalid_request", "is not supported by client"),
        ({"request": "eyJ.x.y"}, "invalid_request", "is not supported by client"),
        ({"scope": "profile", "nonce": None}, "invalid_request", "is not supported by client"),
    ],
    ids=["unsupported-response-type", "prompt-none-no-session", "request-object", "no-openid"],
)
def test_4_11_2_an_unregistered_redirect_uri_is_never_followed_even_for_errors(
    world: World, attack: dict[str, Any], error: str, description: str
) -> None:
    rp = world.client()
    body = _refused(rp.authorize(redirect_uri=ATTACKER, **attack), error)
    assert description in body["error_description"]


def test_4_11_2_an_unknown_client_is_never_redirected(world: World) -> None:
    rp = world.client()
    _refused(rp.authorize(client_id="no-such-client", redirect_uri=ATTACKER), "invalid_client", status=400)


# --- §4.12 307 redirect --------------------------------------------------------------------------


def test_4_12_redirects_answering_a_post_are_303_never_307(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(post_logout=("https://rp.example/bye",))
    granted = world.browser.post("/oidc/authorize", data=rp.authorize_params())
    assert granted.status_code == 303 and "code" in parse_qs(urlsplit(granted.headers["location"]).query)
    refused = world.browser.post("/oidc/authorize", data=rp.authorize_params(response_type="token"))
    assert refused.status_code == 303 and "error=unsupported_response_type" in refused.headers["location"]
    id_token = rp.login_flow()["id_token"]
    logout = world.browser.post(
        "/oidc/logout",
        data={"id_token_hint": id_token, "post_logout_redirect_uri": "https://rp.example/bye", "state": "s"},
    )
    assert logout.status_code == 303 and logout.headers["location"] == "https://rp.example/bye?state=s"


# --- §4.16 clickjacking, §4.2 Referer ----------------------------------------------------------------


def test_4_16_the_logout_confirmation_cannot_be_framed(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    page = world.browser.get("/oidc/logout")
    assert page.status_code == 200 and 'name="confirm"' in page.text
    _cannot_be_framed(page)
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"


def test_4_16_the_signed_out_page_cannot_be_framed(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    page = world.browser.get("/oidc/logout", params={"id_token_hint": rp.login_flow()["id_token"]})
    assert page.status_code == 200 and "signed out" in page.text
    _cannot_be_framed(page)


def test_4_2_the_authorization_response_and_provider_pages_send_no_referrer(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    granted = rp.authorize()
    assert "code" in query_of(granted) and granted.headers["referrer-policy"] == "no-referrer"
    assert granted.headers["cache-control"] == "no-store"
    to_login = rp.authorize(prompt="login")
    assert to_login.headers["referrer-policy"] == "no-referrer"
    assert world.browser.get("/oidc/logout").headers["referrer-policy"] == "no-referrer"


# --- §2.6 CORS ------------------------------------------------------------------------------------


def test_2_6_no_cors_at_the_authorization_endpoint(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    origin = {"Origin": "https://attacker.example"}
    response = world.browser.get("/oidc/authorize", params=rp.authorize_params(), headers=origin)
    assert "access-control-allow-origin" not in response.headers
    preflight = world.browser.options("/oidc/authorize", headers={**origin, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers


# --- §4.3 credentials in URLs and browser history -----------------------------------------------------


def test_4_3_2_an_access_token_in_the_query_string_is_not_accepted(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    access = rp.login_flow()["access_token"]
    response = world.browser.get("/oidc/userinfo", params={"access_token": access})
    assert response.status_code == 401 and response.json() == {"error": "invalid_request"}
    assert response.headers["www-authenticate"] == 'Bearer realm="entente"'


def test_4_3_1_token_endpoint_reads_no_parameter_from_the_query_string(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    query = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
             "code_verifier": rp.verifier}  # fmt: skip
    response = world.browser.post("/oidc/token", params=query, auth=(rp.client_id, rp.secret or ""))
    _refused(response, "unsupported_grant_type")
    assert rp.exchange(code).status_code == 200  # nothing was redeemed from the URL


# --- §2.3 / §4.10.2 audience-restricted access tokens ----------------------------------------------


def test_2_3_access_tokens_are_audience_restricted_to_their_client(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    claims = verify_jwt(world.browser, tokens["access_token"], typ="at+jwt", aud=rp.client_id)
    assert claims["client_id"] == rp.client_id and claims["scope"] == "openid profile email"


def test_2_3_an_id_token_is_not_an_access_token(world: World) -> None:
    """Token confusion: the ID token (``typ: JWT``, same key, same issuer) is refused as a bearer token."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    id_token = rp.login_flow()["id_token"]
    response = world.browser.get("/oidc/userinfo", headers={"Authorization": f"Bearer {id_token}"})
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]
    assert rp.introspect(id_token) == {"active": False}


def test_2_3_an_unsigned_access_token_is_refused(world: World) -> None:
    """``alg=none`` copy of a live access token: refused at UserInfo, inactive at introspection."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    access = rp.login_flow()["access_token"]
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt"}).encode()).rstrip(b"=").decode()
    unsigned = f"{header}.{access.split('.')[1]}."
    response = world.browser.get("/oidc/userinfo", headers={"Authorization": f"Bearer {unsigned}"})
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]
    assert rp.introspect(unsigned) == {"active": False}


# --- §2.5 client authentication -----------------------------------------------------------------


def test_2_5_a_public_client_cannot_authenticate_with_a_secret(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(public=True)
    code = rp.code()
    response = world.browser.post(
        "/oidc/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
              "code_verifier": rp.verifier},
        auth=(rp.client_id, "made-up-secret"),
    )  # fmt: skip
    _refused(response, "invalid_client", status=401)


def test_2_5_client_secrets_are_stored_as_digests_only(world: World) -> None:
    rp = world.client()
    from broker.provider.models import OAuthClient

    with Session(world.engine) as session:
        row = session.get(OAuthClient, rp.client_id)
        assert row is not None and row.secret_sha256 == sha256_hex(rp.secret or "")
        assert (rp.secret or "") not in str(row.model_dump())


# --- §4.14 refresh token protection --------------------------------------------------------------


def test_4_14_2_an_expired_refresh_token_is_refused(world: World) -> None:
    """Refresh tokens expire when unused (each rotation starts a new lifetime): an expired one is refused."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    world.expire(RefreshToken, tokens["refresh_token"])
    _refused(rp.refresh(tokens["refresh_token"]), "invalid_grant")
    assert rp.introspect(tokens["refresh_token"], token_type_hint="refresh_token") == {"active": False}


def test_4_14_2_a_refresh_token_dies_with_its_grant_lifetime(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    with Session(world.engine) as session:
        table = TokenFamily.__table__  # type: ignore[attr-defined]
        session.execute(
            update(table)
            .where(table.c.subject_id == alice["id"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
        session.commit()
    _refused(rp.refresh(tokens["refresh_token"]), "invalid_grant")


def test_4_14_2_a_public_clients_refresh_token_is_rotated_and_reuse_revokes(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(public=True)
    first = rp.login_flow()
    second = rp.refresh(first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    body = _refused(rp.refresh(first["refresh_token"]), "invalid_grant")
    assert "reuse detected" in body["error_description"]
    _refused(rp.refresh(second["refresh_token"]), "invalid_grant")
    assert world.client().introspect(second["access_token"]) == {"active": False}


# --- §4.13 reverse proxies -------------------------------------------------------------------------


def test_4_13_forwarded_headers_change_neither_the_issuer_nor_the_iss_parameter(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    forged = {"X-Forwarded-Host": "attacker.example", "X-Forwarded-Proto": "https", "Forwarded": "host=attacker"}
    document = world.browser.get("/oidc/.well-known/openid-configuration", headers=forged).json()
    assert document["issuer"] == ISSUER and document["authorization_endpoint"] == f"{ISSUER}/authorize"
    response = world.browser.get("/oidc/authorize", params=rp.authorize_params(), headers=forged)
    assert query_of(response)["iss"] == ISSUER


# --- §4.17 in-browser communication ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["web_message", "form_post", "fragment"])
def test_4_17_no_in_browser_or_fragment_response_modes(world: World, mode: str) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    params = query_of(rp.authorize(response_mode=mode))
    assert params["error"] == "invalid_request" and "code" not in params and params["iss"] == ISSUER
