"""Federated login end to end: Entente's /login -> the real oidc-provider -> /login/callback -> a session.

The browser is scripted HTTP (``tests/federation/browser.py``); the IdP is npm oidc-provider 9.13.3
with PKCE required, RFC 9207 ``iss`` in its responses and email claims only at userinfo (its
default ``conformIdTokenClaims``), so the happy path exercises discovery, PKCE, the ID token and
JWKS together, and userinfo too where the binding needs the email (an ``externalId`` binding reads
only the ID token's ``sub``).
"""

from __future__ import annotations

from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.audit.log import Actor, AuditRecord
from broker.federation.models import BindingKey
from broker.federation.oidc import derive_code_verifier
from broker.federation.service import add_oidc_connection, partner_for_email
from broker.sessions.models import LoginSession
from broker.sessions.service import COOKIE_NAME, find_session
from broker.settings import Settings
from tests.conftest import MakePartner
from tests.federation.browser import Browser
from tests.federation.conftest import FederateFactory

Audit = Callable[[str], list[AuditRecord]]


def _session_cookie(response: httpx.Response) -> SimpleCookie:
    headers = [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie" and v.startswith(COOKIE_NAME)]
    assert len(headers) == 1, response.headers
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(headers[0])
    return cookie


def _live_session(engine: Engine, cookie_value: str) -> LoginSession | None:
    with Session(engine) as session:
        return find_session(session, cookie_value=cookie_value)


def test_direct_link_logs_in_and_binds_by_external_id(
    federate: FederateFactory, browser: Browser, engine: Engine, audit: Audit
) -> None:
    fed = federate()
    sub = fed.account()
    person = fed.partner.create_user("ada", externalId=sub)

    authorization = browser.to_idp(f"{fed.start}?next=/workspace/home%3Ftab%3D1")
    query = parse_qs(urlsplit(authorization).query)
    assert authorization.startswith(f"{fed.provider.issuer}/auth?")
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"] == [f"http://testserver/login/callback/{fed.connection_id}"]
    assert {"openid", "email"} <= set(query["scope"][0].split())
    assert len(query["state"][0]) >= 43 and len(query["nonce"][0]) == 43
    assert "code_verifier" not in authorization

    callback = browser.sign_in_at_idp(authorization, sub)
    assert parse_qs(urlsplit(callback).query)["iss"] == [fed.provider.issuer]
    done = browser.get(callback)

    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/workspace/home?tab=1"
    morsel = _session_cookie(done)[COOKIE_NAME]
    assert morsel["httponly"] is True and morsel["samesite"] == "lax" and morsel["path"] == "/"
    assert not morsel["secure"]  # the public base URL is http://testserver
    row = _live_session(engine, morsel.value)
    assert row is not None
    assert (row.partner_id, row.subject_id) == (fed.partner.id, person["id"])
    assert (row.upstream_issuer, row.upstream_subject) == (fed.provider.issuer, sub)
    records = [r for r in audit(fed.partner.id) if r.action == "login.succeeded"]
    assert len(records) == 1 and records[0].resource_id == person["id"]
    assert records[0].detail["subject"] == sub and records[0].detail["session_id"] == row.id


def test_home_realm_discovery_routes_by_email_domain(federate: FederateFactory, browser: Browser) -> None:
    fed = federate()
    sub = fed.account()
    fed.partner.create_user("grace", externalId=sub)

    form = browser.get("/login")
    assert form.status_code == 200 and form.headers["content-type"].startswith("text/html")
    assert '<label for="email">' in form.text and 'name="email"' in form.text and "<script" not in form.text

    email = fed.partner.email("grace")
    answered = browser.request("POST", "/login", data={"email": email, "next": "/after"})
    assert answered.status_code == 303  # straight to the partner's IdP, not by way of /login/{slug}
    authorization = answered.headers["location"]
    assert authorization.startswith(fed.provider.issuer)
    assert parse_qs(urlsplit(authorization).query)["login_hint"] == [email]
    done = browser.get(browser.sign_in_at_idp(authorization, sub))
    assert done.status_code == 303 and done.headers["location"] == "/after"

    signed_in = browser.get("/login")
    assert "You are signed in as" in signed_in.text and fed.partner.email("grace") in signed_in.text


def test_login_hint_skips_the_question(federate: FederateFactory, browser: Browser) -> None:
    fed = federate()
    email = fed.partner.email("hint")
    first = browser.get(f"/login?login_hint={email}")
    assert first.status_code == 303 and first.headers["location"].startswith(fed.provider.issuer)
    assert parse_qs(urlsplit(first.headers["location"]).query)["login_hint"] == [email]


def test_unknown_domain_asks_again_with_a_clear_error(browser: Browser) -> None:
    answered = browser.request("POST", "/login", data={"email": "someone@nobody-here.test"})
    assert answered.status_code == 400
    assert 'role="alert"' in answered.text and "nobody-here.test" in answered.text
    assert 'value="someone@nobody-here.test"' in answered.text


def test_logout_ends_only_this_session(federate: FederateFactory, app: FastAPI, engine: Engine) -> None:
    fed = federate()
    sub = fed.account()
    fed.partner.create_user("lin", externalId=sub)
    first, second = Browser(app), Browser(app)
    try:
        one = _session_cookie(first.login(fed.start, sub))[COOKIE_NAME].value
        two = _session_cookie(second.login(fed.start, sub))[COOKIE_NAME].value
        out = first.get("/logout")
        assert out.status_code == 200 and "signed out" in out.text
        assert 'entente_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
        assert _live_session(engine, one) is None
        assert _live_session(engine, two) is not None
        with Session(engine) as session:
            ended = session.exec(select(LoginSession).where(LoginSession.end_reason == "logout")).all()
        assert one not in {row.secret_sha256 for row in ended}  # only digests are stored
        assert first.get("/logout?next=//evil.example").status_code == 400  # no open redirect on logout either
        assert first.get("/logout?next=/login").headers["location"] == "/login"
    finally:
        first.close()
        second.close()


def test_secure_cookies_when_served_over_https(federate: FederateFactory, settings: Settings) -> None:
    from broker.main import create_app

    https = settings.model_copy(update={"public_base_url": "https://testserver", "delivery_worker": False})
    app = create_app(https)
    browser = Browser(app, base_url="https://testserver")
    try:
        fed = federate(redirect_base=https)
        sub = fed.account()
        fed.partner.create_user("sec", externalId=sub)
        start = browser.get(fed.start)
        transaction = start.headers["set-cookie"]
        assert "Secure" in transaction and "HttpOnly" in transaction and "Path=/login/callback/" in transaction
        done = browser.get(browser.sign_in_at_idp(browser.location(start), sub))
        assert done.status_code == 303, done.text
        assert _session_cookie(done)[COOKIE_NAME]["secure"] is True
    finally:
        browser.close()
        app.state.engine.dispose()


def test_pkce_verifier_is_derived_per_login_and_never_sent_through_the_browser() -> None:
    one, two = derive_code_verifier("secret-one"), derive_code_verifier("secret-two")
    assert one != two and len(one) == 43
    assert set(one) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_binds_by_user_name_claim(federate: FederateFactory, browser: Browser, engine: Engine) -> None:
    fed = federate(binding=BindingKey.USER_NAME)
    user_name = fed.partner.email("Morgan")
    sub = fed.account(preferred_username=user_name.upper())
    person = fed.partner.create_user("morgan", userName=user_name)
    done = browser.login(fed.start, sub)
    assert done.status_code == 303, done.text
    row = _live_session(engine, _session_cookie(done)[COOKIE_NAME].value)
    assert row is not None and row.subject_id == person["id"]


def test_binds_by_verified_email_in_a_verified_domain(
    federate: FederateFactory, browser: Browser, engine: Engine
) -> None:
    fed = federate(binding=BindingKey.EMAIL)
    sub = fed.account(email=fed.partner.email("Noor"))
    person = fed.partner.create_user("other-username", emails=[{"value": fed.partner.email("noor"), "primary": True}])
    done = browser.login(fed.start, sub)
    assert done.status_code == 303, done.text
    row = _live_session(engine, _session_cookie(done)[COOKIE_NAME].value)
    assert row is not None and row.subject_id == person["id"]


def test_the_email_form_refuses_odd_submissions_with_a_page(browser: Browser) -> None:
    for response in (
        browser.request(
            "POST", "/login", content=b'{"email": "a@b.test"}', headers={"content-type": "application/json"}
        ),
        browser.request("POST", "/login", data={"email": "x" * 9000 + "@b.test"}),
        browser.request("POST", "/login", data={f"f{i}": "v" for i in range(20)}),
        browser.request("POST", "/login", data={"email": "not-an-address"}),
    ):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("text/html") and 'role="alert"' in response.text
        assert response.headers["cache-control"] == "no-store" and response.headers["x-frame-options"] == "DENY"


def test_discovery_finds_the_partner_and_its_oldest_connection_in_one_query(
    make_partner: MakePartner, engine: Engine, settings: Settings
) -> None:
    """``partner_for_email``: the domain's partner with its first connection (where its people are
    sent), the partner alone while it has none, nothing for a domain nobody verified."""
    lonely, other, connected = make_partner(), make_partner(), make_partner()
    operator = Actor("cli", "tests")
    with Session(engine) as session:
        for name in ("first", "second"):
            add_oidc_connection(
                session=session, settings=settings, partner_slug=connected.slug, issuer="https://idp.example",
                client_id=f"c-{name}", client_secret="s", actor=operator, name=name,
            )  # fmt: skip
        add_oidc_connection(
            session=session, settings=settings, partner_slug=other.slug, issuer="https://other.example",
            client_id="c-other", client_secret="s", actor=operator,
        )  # fmt: skip
        session.commit()
        found = partner_for_email(session=session, email=f"ada@{connected.domain}")
        assert found is not None and found[0].id == connected.id
        assert found[1] is not None and found[1].client_id == "c-first"
        alone = partner_for_email(session=session, email=lonely.email("x"))
        assert alone is not None and alone[0].id == lonely.id and alone[1] is None
        assert partner_for_email(session=session, email="ada@nobody-verified.example") is None
        assert partner_for_email(session=session, email="not-an-address") is None
