"""OpenID Foundation certification plans for an OP, mirrored where no other test already asserts the check.

Each test is named after the conformance-suite test module it mirrors (``oidcc-…``); the plans are
``oidcc-basic-certification-test-plan``, ``oidcc-config-certification-test-plan``,
``oidcc-rp-initiated-logout-certification-test-plan`` and
``oidcc-backchannel-rp-initiated-logout-certification-test-plan``. ``tests/SECURITY.md`` maps every
module of those plans to the test covering it (here or elsewhere) or says why it does not apply.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from sqlalchemy import update
from sqlmodel import Session, select

from broker.errors import InvalidValue
from broker.provider.clients import add_client
from broker.provider.logout import BACKCHANNEL_EVENT, LogoutSender
from broker.provider.models import AuthorizationCode, LogoutNotification
from broker.sessions.models import LoginSession
from tests.provider.conftest import ISSUER, OPERATOR, RelyingParty, World, jwks, query_of, verify_jwt

BYE = "https://rp.example/bye"


def _error_redirect(response: httpx.Response, rp: RelyingParty, error: str, description: str = "") -> dict[str, str]:
    """RFC 6749 §4.1.2.1 error redirect to the registered URI, with ``state`` and RFC 9207 ``iss``."""
    assert response.headers["location"].startswith(f"{rp.redirect_uri}?"), response.headers["location"]
    params = query_of(response)
    assert params["error"] == error, params
    assert description in params.get("error_description", ""), params
    assert params["state"] == rp.state and params["iss"] == ISSUER and "code" not in params
    return params


def _json_refusal(response: httpx.Response, error: str, status: int = 400) -> dict[str, Any]:
    """An RFC 6749 §5.2 body and no redirection at all."""
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    return body


def _unsigned(token: str) -> str:
    """The same claims under ``alg: none`` and an empty signature (RFC 7519 §6 unsecured JWT)."""
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    return f"{header}.{token.split('.')[1]}."


def _session_ended(world: World, sid: str) -> bool:
    with Session(world.engine) as session:
        row = session.get(LoginSession, sid)
        assert row is not None
        return row.ended_at is not None


# --- oidcc-basic-certification-test-plan ------------------------------------------------------------


def test_oidcc_response_type_missing(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    _error_redirect(rp.authorize(response_type=None), rp, "unsupported_response_type")


def test_oidcc_idtoken_signature(world: World) -> None:
    """RS256 with a ``kid`` the JWKS publishes; one bit flipped in the signature and it no longer verifies."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    token = rp.login_flow()["id_token"]
    verify_jwt(world.browser, token, typ="JWT", iss=ISSUER, aud=rp.client_id)
    header, payload, signature = token.split(".")
    flipped = f"{header}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(Exception, match="signature"):
        jwt.decode(flipped, jwks(world.browser), algorithms=["RS256"])


def test_oidcc_idtoken_unsigned_never_issued_nor_accepted_as_id_token_hint(world: World) -> None:
    """``alg=none``: the OP signs nothing with it, and an unsigned copy of its own ID token is refused."""
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client(post_logout=(BYE,))
    token = rp.login_flow()["id_token"]
    document = world.browser.get("/oidc/.well-known/openid-configuration").json()
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    response = world.browser.get(
        "/oidc/logout", params={"id_token_hint": _unsigned(token), "post_logout_redirect_uri": BYE, "state": "s"}
    )
    body = _json_refusal(response, "invalid_request")
    assert "Algorithm of 'none' is not allowed" in body.get("error_description", "")
    assert not _session_ended(world, sid)


def test_oidcc_userinfo_post_header(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    access = rp.login_flow(scope="openid email")["access_token"]
    response = world.browser.post("/oidc/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == alice["id"] and response.json()["email"] == world.partner.email("alice")


def test_oidcc_ensure_other_scope_order_succeeds(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow(scope="email openid")
    assert set(tokens["scope"].split()) == {"openid", "email"}
    claims = verify_jwt(world.browser, tokens["id_token"], typ="JWT", aud=rp.client_id, sub=alice["id"])
    assert claims["email"] == world.partner.email("alice")


def test_oidcc_scope_address_phone_all_are_dropped_not_refused(world: World) -> None:
    """``oidcc-scope-address`` / ``-phone`` / ``-all``: Entente holds no address or phone (RFC 6749 §3.3)."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow(scope="openid profile email address phone")
    assert tokens["scope"] == "openid profile email"
    claims = verify_jwt(world.browser, tokens["id_token"], typ="JWT", aud=rp.client_id)
    assert "address" not in claims and "phone_number" not in claims


OPTIONAL_PARAMETERS = [
    ("oidcc-display-page", {"display": "page"}),
    ("oidcc-display-popup", {"display": "popup"}),
    ("oidcc-ensure-request-with-unknown-parameter-succeeds", {"extra": "foobar"}),
    ("oidcc-login-hint", {"login_hint": "alice@example.com"}),
    ("oidcc-ui-locales", {"ui_locales": "se"}),
    ("oidcc-claims-locales", {"claims_locales": "se"}),
    ("oidcc-ensure-request-with-acr-values-succeeds", {"acr_values": "1 2"}),
    ("oidcc-claims-essential", {"claims": json.dumps({"userinfo": {"name": {"essential": True}}})}),
]
"""(module, the request parameters it adds): each must be accepted (ignored where unsupported)."""


@pytest.mark.parametrize(("module", "extra"), OPTIONAL_PARAMETERS, ids=[module for module, _ in OPTIONAL_PARAMETERS])
def test_oidcc_optional_request_parameters_are_accepted(world: World, module: str, extra: dict[str, str]) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow(**extra)
    verify_jwt(world.browser, tokens["id_token"], typ="JWT", aud=rp.client_id, sub=alice["id"], nonce=rp.nonce)


def test_oidcc_prompt_none_logged_in(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow(prompt="none")
    verify_jwt(world.browser, tokens["id_token"], typ="JWT", aud=rp.client_id, sub=alice["id"])


def test_oidcc_max_age_1_forces_login_and_auth_time_is_present(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client()
    with Session(world.engine) as session:  # the login is older than max_age=1
        table = LoginSession.__table__  # type: ignore[attr-defined]
        session.execute(
            update(table).where(table.c.id == sid).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
        )
        session.commit()
    response = rp.authorize(max_age="1")
    assert response.status_code == 302 and urlsplit(response.headers["location"]).path == "/login"
    claims = verify_jwt(world.browser, rp.login_flow(max_age="10000")["id_token"], typ="JWT", aud=rp.client_id)
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]


def test_oidcc_id_token_hint(world: World) -> None:
    """A re-authentication naming the current user in ``id_token_hint`` with ``prompt=none`` gets a code."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    first = rp.login_flow()["id_token"]
    again = rp.login_flow(prompt="none", id_token_hint=first)["id_token"]
    assert verify_jwt(world.browser, again, typ="JWT", aud=rp.client_id)["sub"] == alice["id"]


def test_oidcc_codereuse_30seconds(world: World) -> None:
    """A code replayed after its lifetime is still a replay: refused, and what it gave is revoked."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    tokens = rp.exchange(code).json()
    world.expire(AuthorizationCode, code, ago=dt.timedelta(seconds=30))
    body = _json_refusal(rp.exchange(code), "invalid_grant")
    assert "already used" in body["error_description"]
    assert rp.introspect(tokens["access_token"]) == {"active": False}
    userinfo = world.browser.get("/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401 and 'error="invalid_token"' in userinfo.headers["www-authenticate"]


# --- redirect URI modules of the dynamic plan that apply to operator-registered clients ---------------


def _client_with(world: World, redirect_uri: str) -> RelyingParty:
    slug = f"rp-q{abs(hash(redirect_uri)) % 10**8}"
    with Session(world.engine, expire_on_commit=False) as session:
        added = add_client(
            session, slug=slug, workspace_slug=world.workspace.slug, redirect_uris=[redirect_uri], actor=OPERATOR
        )
    return RelyingParty(slug, added.secret, redirect_uri, world.workspace, world.browser)


def test_oidcc_redirect_uri_query_mismatch(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = _client_with(world, f"https://{world.workspace.slug}.example/cb?tenant=a")
    body = _json_refusal(rp.authorize(redirect_uri=rp.redirect_uri.replace("tenant=a", "tenant=b")), "invalid_request")
    assert "is not supported by client" in body.get("error_description", "")
    assert "code" in query_of(rp.authorize())  # the registered query, exactly, is fine (oidcc-redirect-uri-query-OK)


def test_oidcc_redirect_uri_regfrag(world: World) -> None:
    with Session(world.engine) as session, pytest.raises(InvalidValue, match="must not have a fragment"):
        add_client(
            session,
            slug="rp-fragment",
            workspace_slug=world.workspace.slug,
            redirect_uris=["https://rp.example/cb#frag"],
            actor=OPERATOR,
        )


# --- oidcc-rp-initiated-logout-certification-test-plan -------------------------------------------


def test_oidcc_rp_initiated_logout_no_id_token_hint(world: World) -> None:
    """Without a hint the person confirms first, and nothing proves the request came from that RP, so
    the browser is not sent anywhere (RP-Initiated Logout §3: no redirection without verifying the RP)."""
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client(post_logout=(BYE,))
    rp.login_flow()
    params = {"client_id": rp.client_id, "post_logout_redirect_uri": BYE, "state": "st-1"}
    page = world.browser.get("/oidc/logout", params=params)
    assert page.status_code == 200 and 'name="confirm"' in page.text and "location" not in page.headers
    assert not _session_ended(world, sid)
    confirm = page.text.split('name="confirm" value="')[1].split('"')[0]
    done = world.browser.post("/oidc/logout", data={**params, "confirm": confirm})
    assert done.status_code == 200 and "signed out" in done.text and "location" not in done.headers
    assert _session_ended(world, sid)


def test_oidcc_rp_initiated_logout_no_post_logout_redirect_uri(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client(post_logout=(BYE,))
    token = rp.login_flow()["id_token"]
    response = world.browser.get("/oidc/logout", params={"id_token_hint": token, "state": "st-2"})
    assert response.status_code == 200 and "signed out" in response.text and "location" not in response.headers
    assert _session_ended(world, sid)


def test_oidcc_rp_initiated_logout_no_state(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(post_logout=(BYE,))
    token = rp.login_flow()["id_token"]
    response = world.browser.get("/oidc/logout", params={"id_token_hint": token, "post_logout_redirect_uri": BYE})
    assert response.status_code == 302 and response.headers["location"] == BYE  # no state invented


def test_oidcc_rp_initiated_logout_only_state(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client(post_logout=(BYE,))
    rp.login_flow()
    page = world.browser.get("/oidc/logout", params={"state": "st-3"})
    assert page.status_code == 200 and 'name="confirm"' in page.text and "location" not in page.headers
    confirm = page.text.split('name="confirm" value="')[1].split('"')[0]
    done = world.browser.post("/oidc/logout", data={"state": "st-3", "confirm": confirm})
    assert done.status_code == 200 and "signed out" in done.text and "location" not in done.headers
    assert _session_ended(world, sid)


def test_oidcc_rp_initiated_logout_query_added_to_post_logout_redirect_uri(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(post_logout=(BYE,))
    token = rp.login_flow()["id_token"]
    response = world.browser.get(
        "/oidc/logout", params={"id_token_hint": token, "post_logout_redirect_uri": f"{BYE}?x=1", "state": "s"}
    )
    assert response.status_code == 200 and "location" not in response.headers and "signed out" in response.text


def test_oidcc_rp_initiated_logout_bad_id_token_hint(world: World) -> None:
    """An ID token of another client, with that other client's own registered URI: refused, no redirect."""
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp, other = world.client(post_logout=(BYE,)), world.client(post_logout=("https://other.example/bye",))
    token = rp.login_flow()["id_token"]
    response = world.browser.get(
        "/oidc/logout",
        params={
            "id_token_hint": token,
            "client_id": other.client_id,
            "post_logout_redirect_uri": "https://other.example/bye",
        },
    )
    _json_refusal(response, "invalid_request")
    assert not _session_ended(world, sid)


# --- oidcc-backchannel-rp-initiated-logout-certification-test-plan --------------------------------


def test_oidcc_backchannel_rp_initiated_logout(world: World) -> None:
    """RP-initiated logout: the RP's back-channel URI receives a logout token whose ``sub`` and ``sid``
    are the ID token's, without ``nonce``; the browser goes to the registered URI with ``state``; and
    a ``prompt=none`` authorization afterwards is ``login_required``."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(post_logout=(BYE,), backchannel="https://rp.example/backchannel")
    id_token = rp.login_flow()["id_token"]
    claims = verify_jwt(world.browser, id_token, typ="JWT", aud=rp.client_id)
    response = world.browser.get(
        "/oidc/logout", params={"id_token_hint": id_token, "post_logout_redirect_uri": BYE, "state": "bc-1"}
    )
    assert response.status_code == 302 and response.headers["location"] == f"{BYE}?state=bc-1"
    received: list[dict[str, Any]] = []
    keys = jwks(world.browser)

    def receiver(request: httpx.Request) -> httpx.Response:
        token = parse_qs(request.content.decode())["logout_token"][0]
        decoded = jwt.decode(token, keys, algorithms=["RS256"])
        if decoded.claims.get("sid") == claims["sid"]:
            assert str(request.url) == "https://rp.example/backchannel"
            received.append({"typ": decoded.header["typ"], **decoded.claims})
        return httpx.Response(200)

    async def deliver() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as http:
            sender = LogoutSender(engine=world.engine, settings=world.settings, http=http)
            for _ in range(50):
                await sender.run_once()
                if received:
                    return

    asyncio.run(deliver())
    [logout] = received
    assert logout["typ"] == "logout+jwt" and logout["iss"] == ISSUER and logout["aud"] == rp.client_id
    assert logout["sub"] == claims["sub"] and logout["sid"] == claims["sid"] and "nonce" not in logout
    assert logout["events"] == {BACKCHANNEL_EVENT: {}}
    with Session(world.engine) as session:
        notes = session.exec(select(LogoutNotification).where(LogoutNotification.sid == claims["sid"])).all()
        assert [n.state for n in notes] == ["delivered"]
    world.browser.cookies.clear()  # the logout's Set-Cookie
    _error_redirect(rp.authorize(prompt="none"), rp, "login_required")
