"""The authorization endpoint: RFC 6749 §4.1.1–§4.1.2.1, OIDC Core §3.1.2, RFC 7636, RFC 9207, RFC 9700 §4.1."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient
from sqlmodel import Session

from broker.main import create_app
from broker.provider.clients import sha256_hex
from broker.provider.models import AuthorizationCode
from tests.conftest import PATCH_SCHEMA
from tests.provider.conftest import ISSUER, World, asks_to_sign_in, query_of, verify_jwt


def _json_error(response, error: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """RFC 6749 §5.2 body, and no redirect (the client or its redirect URI could not be trusted)."""
    assert response.status_code in (400, 401), response.text
    assert "location" not in response.headers
    body = response.json()
    assert body["error"] == error, body
    return body  # type: ignore[no-any-return]


def _redirected_error(response, redirect_uri: str, error: str, state: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """RFC 6749 §4.1.2.1 error redirect, with ``state`` and RFC 9207 ``iss``."""
    assert response.headers["location"].startswith(f"{redirect_uri}?"), response.headers["location"]
    params = query_of(response)
    assert params["error"] == error, params
    assert params["state"] == state and params["iss"] == ISSUER
    assert "code" not in params
    return params


def test_code_issued_with_state_and_iss(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    response = rp.authorize()
    params = query_of(response)
    assert response.headers["location"].startswith(f"{rp.redirect_uri}?")
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == rp.state and params["iss"] == ISSUER
    with Session(world.engine) as session:
        row = session.get(AuthorizationCode, sha256_hex(params["code"]))
        assert row is not None and row.used_at is None
        assert (row.expires_at - row.auth_time).total_seconds() <= 61 + 5  # 60 s codes


def test_post_authorization_request_works_like_get(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    response = world.browser.post("/oidc/authorize", data=rp.authorize_params())
    assert response.status_code == 303, response.text  # after a POST, never a 302 or 307 (RFC 9700 §4.12)
    assert "code" in parse_qs(urlsplit(response.headers["location"]).query)


def test_no_session_asks_the_email_question_in_place_and_comes_back(world: World) -> None:
    """Entente's own question at /oidc/authorize itself (no redirect to /login first), then back here."""
    rp = world.client()
    response = rp.authorize(prompt="login")
    assert response.status_code == 200 and asks_to_sign_in(response)
    assert (
        response.headers["cache-control"] == "no-store"
        and "frame-ancestors 'none'" in (response.headers["content-security-policy"])
    )
    back = html.unescape(re.search(r'name="next" value="([^"]*)"', response.text).group(1))  # type: ignore[union-attr]
    assert back.startswith("/oidc/authorize?")
    back_params = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    assert back_params["client_id"] == rp.client_id and back_params["nonce"] == rp.nonce
    assert "prompt" not in back_params  # no loop back to the login page after logging in


def test_an_email_login_hint_goes_to_the_login_page_which_skips_the_question(world: World) -> None:
    rp = world.client()
    response = rp.authorize(login_hint="ada@partner.example")
    location = urlsplit(response.headers["location"])
    assert response.status_code == 302 and location.path == "/login"
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["login_hint"] == "ada@partner.example" and query["next"].startswith("/oidc/authorize?")
    opaque = rp.authorize(login_hint="ada")  # not an email: the question is asked
    assert opaque.status_code == 200 and asks_to_sign_in(opaque)


def test_a_custom_login_page_is_redirected_to(world: World) -> None:
    rp = world.client()
    app = create_app(world.settings.model_copy(update={"oidc_login_path": "/sso/start"}))
    browser = TestClient(app, base_url="http://localhost", follow_redirects=False)  # no lifespan: no workers
    try:
        response = browser.get("/oidc/authorize", params=rp.authorize_params())
    finally:
        browser.close()
        app.state.engine.dispose()
    location = urlsplit(response.headers["location"])
    assert response.status_code == 302 and location.path == "/sso/start"
    assert parse_qs(location.query)["next"][0].startswith("/oidc/authorize?")


def test_prompt_login_sends_a_logged_in_person_to_login_again(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    assert urlsplit(rp.authorize(prompt="login").headers["location"]).path == "/login"


def test_max_age_exceeded_sends_to_login(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    assert urlsplit(rp.authorize(max_age="0").headers["location"]).path == "/login"
    assert "code" in query_of(rp.authorize(max_age="3600"))


def test_after_a_login_forced_by_max_age_0_the_request_gets_its_code(world: World) -> None:
    """max_age=0 (as prompt=login, OIDC Core §3.1.2.1): the login it forces satisfies it; the way back
    does not send the browser to the login page again, and the ID token says when that login was."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    location = urlsplit(rp.authorize(max_age="0").headers["location"])
    back = parse_qs(location.query)["next"][0]
    assert "max_age" not in parse_qs(urlsplit(back).query)
    world.login(alice["id"])  # the login the page asked for
    code = query_of(world.browser.get(back))["code"]
    tokens = rp.exchange(code)
    assert tokens.status_code == 200, tokens.text
    claims = verify_jwt(world.browser, tokens.json()["id_token"], typ="JWT", aud=rp.client_id)
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]


def test_prompt_none_without_session_is_login_required(world: World) -> None:
    rp = world.client()
    _redirected_error(rp.authorize(prompt="none"), rp.redirect_uri, "login_required", rp.state)


def test_unknown_client_is_refused_without_redirect(world: World) -> None:
    rp = world.client()
    _json_error(rp.authorize(client_id="nobody"), "invalid_client")


def test_redirect_uri_must_match_exactly(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    for near_miss in (
        rp.redirect_uri + "/",
        rp.redirect_uri + "?x=1",
        rp.redirect_uri.upper(),
        rp.redirect_uri.replace("https://", "http://"),
        rp.redirect_uri + "/../callback",
        "https://attacker.example/callback",
    ):
        _json_error(rp.authorize(redirect_uri=near_miss), "invalid_request")


def test_redirect_uri_is_required(world: World) -> None:
    rp = world.client()
    _json_error(rp.authorize(redirect_uri=None), "invalid_request")


def test_public_client_must_send_pkce(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(public=True)
    response = rp.authorize(code_challenge=None, code_challenge_method=None)
    _redirected_error(response, rp.redirect_uri, "invalid_request", rp.state)


def test_pkce_plain_is_refused_no_downgrade(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(public=True)
    _redirected_error(rp.authorize(code_challenge_method="plain"), rp.redirect_uri, "invalid_request", rp.state)
    # a challenge without a method would mean plain (RFC 7636 §4.3): refused too
    _redirected_error(rp.authorize(code_challenge_method=None), rp.redirect_uri, "invalid_request", rp.state)
    _redirected_error(rp.authorize(code_challenge="short"), rp.redirect_uri, "invalid_request", rp.state)


def test_openid_request_needs_a_nonce(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    _redirected_error(rp.authorize(nonce=None), rp.redirect_uri, "invalid_request", rp.state)


def test_a_nonce_is_used_once_per_client(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    rp.code(nonce="same-nonce")
    _redirected_error(rp.authorize(nonce="same-nonce"), rp.redirect_uri, "invalid_request", rp.state)


def test_only_response_type_code(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    for response_type in ("token", "id_token", "code id_token"):
        response = rp.authorize(response_type=response_type)
        _redirected_error(response, rp.redirect_uri, "unsupported_response_type", rp.state)


def test_request_objects_and_other_response_modes_are_refused(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    _redirected_error(rp.authorize(request="eyJ.x.y"), rp.redirect_uri, "request_not_supported", rp.state)
    _redirected_error(
        rp.authorize(request_uri="https://rp.example/r"), rp.redirect_uri, "request_uri_not_supported", rp.state
    )
    _redirected_error(rp.authorize(response_mode="fragment"), rp.redirect_uri, "invalid_request", rp.state)
    _redirected_error(rp.authorize(max_age="soon"), rp.redirect_uri, "invalid_request", rp.state)


def test_repeated_parameters_are_refused(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    params = list(rp.authorize_params().items()) + [("scope", "openid")]
    response = world.browser.get("/oidc/authorize", params=params)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_scopes_the_client_may_not_have_are_dropped(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow(scope="openid email phone offline_access")
    assert tokens["scope"] == "openid email"


def test_person_without_a_grant_for_the_workspace_is_denied(world: World) -> None:
    bob = world.person("bob", in_eng=False)
    world.login(bob["id"])
    rp = world.client()
    _redirected_error(rp.authorize(), rp.redirect_uri, "access_denied", rp.state)


def test_inactive_person_with_a_live_session_is_denied(world: World) -> None:
    carol = world.person("carol")
    world.login(carol["id"])
    rp = world.client()
    response = world.partner.client.patch(
        f"/Users/{carol['id']}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]},
    )
    assert response.status_code == 200
    _redirected_error(rp.authorize(), rp.redirect_uri, "access_denied", rp.state)


def test_a_client_of_another_workspace_gets_nothing(world: World) -> None:
    from tests.lifecycle.helpers import new_workspace

    alice = world.person("alice")
    world.login(alice["id"])
    elsewhere = world.client(workspace=new_workspace(world.engine, world.settings))
    _redirected_error(elsewhere.authorize(), elsewhere.redirect_uri, "access_denied", elsewhere.state)
