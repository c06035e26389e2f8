"""Every way a federated login must fail, each with its precise refusal: an HTML page (400, never a 500),
the reason shown, no session cookie, and a ``login.failed`` audit record naming the error class.

Browser-side attacks (replayed or forged responses, altered ``nonce``/``state``/``iss``/PKCE challenge,
open redirects) are played against the real oidc-provider. ID-token attacks need an IdP that signs
what it should not: ``Tamper`` passes Entente's traffic to the real provider and rewrites the token
response in flight, signing with a key it publishes in the provider's JWKS (OIDC Core §3.1.3.7 steps).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.audit.log import AuditRecord
from broker.federation.models import BindingKey, IdPConnection
from broker.scim.models import ScimUser
from broker.sessions.models import LoginSession
from broker.sessions.service import COOKIE_NAME
from tests.conftest import MakePartner
from tests.federation.browser import Browser, replace_query
from tests.federation.conftest import Federated, FederateFactory, Tamper, b64, b64json

Audit = Callable[[str], list[AuditRecord]]


def refused(response: httpx.Response, fragment: str, *, status: int = 400) -> str:
    """The response is a refusal page containing ``fragment`` and setting no session cookie."""
    assert response.status_code == status, (response.status_code, response.headers, response.text)
    assert response.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in response.text
    assert fragment in response.text, response.text
    assert f"{COOKIE_NAME}=" not in response.headers.get("set-cookie", "")
    return response.text


def failure(audit: Audit, fed: Federated, error: str) -> AuditRecord:
    """The partner's last ``login.failed`` record, which must name ``error``."""
    records = [r for r in audit(fed.partner.id) if r.action == "login.failed"]
    assert records, "no login.failed audit record"
    assert records[-1].detail["error"] == error, records[-1].detail
    assert records[-1].detail["connection"] == fed.connection_id
    return records[-1]


def no_sessions(engine: Engine, partner_id: str) -> None:
    with Session(engine) as session:
        assert session.exec(select(LoginSession).where(LoginSession.partner_id == partner_id)).all() == []


# --- state, replay, nonce, PKCE, RFC 9207 ------------------------------------------------------------


def test_a_used_callback_cannot_be_replayed(fed: Federated, browser: Browser, audit: Audit) -> None:
    callback = browser.sign_in_at_idp(browser.to_idp(fed.start), fed.sub)  # type: ignore[attr-defined]
    assert browser.get(callback).status_code == 303
    refused(browser.get(callback), "no sign-in in progress")
    failure(audit, fed, "ReplayDetected")


def test_a_callback_is_refused_in_another_browser(fed: Federated, browser: Browser, app: object, audit: Audit) -> None:
    """Login CSRF / a stolen code: the response is only good in the browser that started the login."""
    callback = browser.sign_in_at_idp(browser.to_idp(fed.start), fed.sub)  # type: ignore[attr-defined]
    other = Browser(app)  # type: ignore[arg-type]
    try:
        refused(other.get(callback), "no sign-in in progress")
    finally:
        other.close()
    failure(audit, fed, "ReplayDetected")


def test_a_changed_state_is_refused(fed: Federated, browser: Browser, audit: Audit, engine: Engine) -> None:
    callback = browser.sign_in_at_idp(browser.to_idp(fed.start), fed.sub)  # type: ignore[attr-defined]
    refused(browser.get(replace_query(callback, state="forged-state")), "no sign-in in progress")
    failure(audit, fed, "ReplayDetected")
    no_sessions(engine, fed.partner.id)


def test_a_connection_changed_during_the_sign_in_is_refused(
    fed: Federated, browser: Browser, audit: Audit, engine: Engine
) -> None:
    """The callback may use the connection its process began with; the version read in the login's own
    transaction decides, so a changed (e.g. rebound) connection finishes no login begun before the change."""
    callback = browser.sign_in_at_idp(browser.to_idp(fed.start), fed.sub)  # type: ignore[attr-defined]
    with Session(engine) as session:
        row = session.get(IdPConnection, fed.connection_id)
        assert row is not None
        row.binding_key, row.version = BindingKey.EMAIL, row.version + 1
        session.add(row)
        session.commit()
    refused(browser.get(callback), "settings changed during this sign-in")
    failure(audit, fed, "FederationError")
    no_sessions(engine, fed.partner.id)


def test_a_nonce_not_of_this_login_is_refused(fed: Federated, browser: Browser, audit: Audit) -> None:
    """The authorization request's nonce is changed on its way to the IdP: its ID token carries that one."""
    authorization = replace_query(browser.to_idp(fed.start), nonce="n-" + "x" * 41)
    refused(browser.get(browser.sign_in_at_idp(authorization, fed.sub)), "nonce")  # type: ignore[attr-defined]
    failure(audit, fed, "ReplayDetected")


def test_a_changed_pkce_challenge_makes_the_code_useless(fed: Federated, browser: Browser, audit: Audit) -> None:
    """RFC 7636 §4.6: the IdP checks our verifier against the challenge it saw, so a swapped challenge fails."""
    authorization = replace_query(browser.to_idp(fed.start), code_challenge="A" * 43)
    refused(browser.get(browser.sign_in_at_idp(authorization, fed.sub)), "refused to redeem the sign-in code")  # type: ignore[attr-defined]
    failure(audit, fed, "UpstreamError")


def test_rfc9207_iss_of_another_idp_is_refused(fed: Federated, browser: Browser, audit: Audit) -> None:
    callback = browser.sign_in_at_idp(browser.to_idp(fed.start), fed.sub)  # type: ignore[attr-defined]
    refused(browser.get(replace_query(callback, iss="https://mix-up.example")), "RFC 9207")
    failure(audit, fed, "UntrustedIssuer")


def test_rfc9207_missing_iss_is_refused_when_the_idp_always_sends_it(fed: Federated, browser: Browser) -> None:
    callback = browser.sign_in_at_idp(browser.to_idp(fed.start), fed.sub)  # type: ignore[attr-defined]
    refused(browser.get(replace_query(callback, iss=None)), "lacks the &#x27;iss&#x27;")


def test_an_idp_error_response_is_shown(fed: Federated, browser: Browser, audit: Audit) -> None:
    authorization = browser.to_idp(fed.start)
    page = browser.get(authorization)
    interaction = browser.location(page)
    aborted = browser.follow(browser.get(interaction + "/abort"))
    refused(aborted, "access_denied")
    failure(audit, fed, "UpstreamError")


def test_a_wrong_client_secret_is_refused(federate: FederateFactory, browser: Browser, audit: Audit) -> None:
    bad = federate(client_secret="not-the-secret")
    sub = bad.account()
    bad.partner.create_user("sam", externalId=sub)
    refused(browser.login(bad.start, sub), "invalid_client")
    failure(audit, bad, "UpstreamError")


# --- open redirect ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:evil.example",
        "/%0d%0aSet-Cookie:x=1",
        "/ok\r\nLocation: https://evil.example",
    ],
)
def test_next_must_be_a_path_of_this_site(fed: Federated, browser: Browser, target: str) -> None:
    for response in (
        browser.get(replace_query(fed.start, next=target)),
        browser.get(replace_query("/login", next=target)),
        browser.request("POST", "/login", data={"email": fed.partner.email("kim"), "next": target}),
    ):
        if target == "/%0d%0aSet-Cookie:x=1":  # a harmless percent-encoded path: allowed, stays on this site
            assert response.status_code in (200, 303)
            assert "evil" not in response.headers.get("location", "")
            continue
        refused(response, "only returns to a page of its own")
        assert "location" not in response.headers


# --- the ID token (OIDC Core §3.1.3.7), from an IdP that signs what it should not ------------------


def _sign_in(browser: Browser, fed: Federated) -> httpx.Response:
    return browser.login(fed.start, fed.sub)  # type: ignore[attr-defined]


def _rewrite(tamper: Tamper, change: Callable[[str], str]) -> None:
    tamper.publish_key()
    tamper.token = lambda body: {**body, "id_token": change(body["id_token"])}


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("audience", "not meant for Entente"),
        ("expired", "has expired"),
        ("too_old", "too old"),
        ("future", "issued in the future"),
        ("issuer", "was issued by"),
        ("several_audiences", "several audiences and no"),
        ("azp", "issued to another client"),
        ("no_nonce", "nonce"),
        ("no_sub", "lacks required claims: sub"),
        ("typ", "not an ID token"),
        ("sub_too_long", "1 to 255 ASCII"),
    ],
)
def test_id_token_claims_are_validated(
    fed: Federated, browser: Browser, tamper: Tamper, audit: Audit, engine: Engine, case: str, fragment: str
) -> None:
    now = int(time.time())
    changes: dict[str, dict[str, object]] = {
        "audience": {"aud": "another-client"},
        "expired": {"iat": now - 200, "exp": now - 61},
        "too_old": {"iat": now - 600 - 60 - 30, "exp": now + 300},
        "future": {"iat": now + 3600, "exp": now + 7200},
        "issuer": {"iss": "https://evil.example"},
        "several_audiences": {"aud": [fed.client_id, "another-client"]},
        "azp": {"azp": "another-client"},
        "no_nonce": {"nonce": None},
        "no_sub": {"sub": None},
        "typ": {},
        "sub_too_long": {"sub": "s" * 256},
    }
    header = {"typ": "logout+jwt"} if case == "typ" else None
    _rewrite(tamper, lambda token: tamper.resign(token, header=header, **changes[case]))
    refused(_sign_in(browser, fed), fragment)
    assert failure(audit, fed, "ReplayDetected" if case == "no_nonce" else "InvalidAssertion")
    no_sessions(engine, fed.partner.id)


def test_a_tampered_id_token_fails_its_signature(
    fed: Federated, browser: Browser, tamper: Tamper, audit: Audit
) -> None:
    def swap_subject(token: str) -> str:
        header, payload, signature = token.split(".")
        claims = b64json(payload)
        claims["sub"] = "somebody-else"
        return f"{header}.{b64(claims)}.{signature}"

    tamper.token = lambda body: {**body, "id_token": swap_subject(body["id_token"])}
    refused(_sign_in(browser, fed), "signature does not verify")
    failure(audit, fed, "InvalidAssertion")


def test_alg_none_is_refused(fed: Federated, browser: Browser, tamper: Tamper) -> None:
    def unsigned(token: str) -> str:
        return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{token.split('.')[1]}."

    tamper.token = lambda body: {**body, "id_token": unsigned(body["id_token"])}
    refused(_sign_in(browser, fed), "algorithm &#x27;none&#x27; is not accepted")


def test_hmac_with_the_client_secret_is_refused(fed: Federated, browser: Browser, tamper: Tamper) -> None:
    """Key confusion: an HS256 token keyed with the client secret (which the IdP and we both know)."""
    key = OctKey.import_key(fed.client_secret)

    def hmac_signed(token: str) -> str:
        return jwt.encode({"alg": "HS256"}, b64json(token.split(".")[1]), key)

    tamper.token = lambda body: {**body, "id_token": hmac_signed(body["id_token"])}
    refused(_sign_in(browser, fed), "algorithm &#x27;HS256&#x27; is not accepted")


def test_an_unpublished_key_is_refused_after_one_jwks_refetch(
    fed: Federated, browser: Browser, tamper: Tamper, app: object
) -> None:
    assert _sign_in(browser, fed).status_code == 303  # caches the JWKS (fetch 1)
    tamper.token = lambda body: {**body, "id_token": tamper.resign(body["id_token"])}  # key never published
    second = Browser(app)  # type: ignore[arg-type]
    try:
        refused(second.login(fed.start, fed.sub), "which the identity provider does not publish")  # type: ignore[attr-defined]
    finally:
        second.close()
    assert tamper.jwks_fetches == 2  # the cached set, then exactly one refetch for the unknown kid


def test_a_key_rotated_in_mid_flow_is_picked_up(
    fed: Federated, browser: Browser, tamper: Tamper, engine: Engine
) -> None:
    """The IdP rotates to a new key after Entente cached its JWKS: one refetch, and the login succeeds."""
    assert _sign_in(browser, fed).status_code == 303  # caches the JWKS (fetch 1), real key
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rotated-key", "use": "sig"})
    tamper.key = rotated
    tamper.publish_key(from_fetch=2)
    tamper.token = lambda body: {**body, "id_token": tamper.resign(body["id_token"])}
    second = Browser(browser.entente.app)  # type: ignore[arg-type]
    try:
        done = second.login(fed.start, fed.sub)  # type: ignore[attr-defined]
    finally:
        second.close()
    assert done.status_code == 303, done.text
    assert tamper.jwks_fetches == 2


def test_userinfo_of_another_subject_is_refused(
    federate: FederateFactory, browser: Browser, tamper: Tamper, audit: Audit
) -> None:
    """OIDC Core §5.3.4: userinfo's ``sub`` must be the ID token's (no token substitution).

    An email binding needs the address, which this IdP sends only at userinfo."""
    fed = federate(binding=BindingKey.EMAIL)
    sub = fed.account(email=fed.partner.email("uma"))
    fed.partner.create_user("uma")
    tamper.userinfo = lambda claims: {**claims, "sub": "someone-else"}
    refused(browser.login(fed.start, sub), "token substitution")
    assert tamper.userinfo_calls == 1
    failure(audit, fed, "InvalidAssertion")


def test_external_id_binding_asks_no_userinfo(fed: Federated, browser: Browser, tamper: Tamper) -> None:
    """The ID token's ``sub`` is all an externalId binding reads: no userinfo round trip (it is optional)."""
    tamper.userinfo = lambda claims: {**claims, "sub": "someone-else"}  # would refuse, were it asked
    assert _sign_in(browser, fed).status_code == 303
    assert tamper.userinfo_calls == 0


# --- binding: unknown, inactive, unverified, out of domain, another partner's ------------------------


def test_an_unknown_person_is_refused(
    federate: FederateFactory, browser: Browser, audit: Audit, engine: Engine
) -> None:
    fed = federate()
    sub = fed.account()
    page = refused(browser.login(fed.start, sub), "directory at Entente")
    assert "ask your administrator" in page
    record = failure(audit, fed, "UnknownPerson")
    assert record.detail["subject"] == sub and record.detail["issuer"] == fed.provider.issuer
    no_sessions(engine, fed.partner.id)


def test_an_inactive_person_is_refused(federate: FederateFactory, browser: Browser, audit: Audit) -> None:
    fed = federate()
    sub = fed.account()
    fed.partner.create_user("left", externalId=sub, active=False)
    refused(browser.login(fed.start, sub), "deactivated")
    failure(audit, fed, "UnknownPerson")


def test_email_binding_refuses_an_unverified_email(federate: FederateFactory, browser: Browser, audit: Audit) -> None:
    fed = federate(binding=BindingKey.EMAIL)
    sub = fed.account(email=fed.partner.email("una"), verified=False)
    fed.partner.create_user("una")
    refused(browser.login(fed.start, sub), "verified email address in a domain of your organisation")
    failure(audit, fed, "UnknownPerson")


def test_email_binding_refuses_an_email_outside_the_verified_domains(
    make_partner: MakePartner, federate: FederateFactory, browser: Browser
) -> None:
    """The person does hold the address (a warn-only partner accepted it), but its domain is not verified."""
    from broker.tenants.models import DomainPolicy

    partner = make_partner(domain_policy=DomainPolicy.WARN)
    fed = federate(binding=BindingKey.EMAIL, partner=partner)
    outside = f"vic@{partner.slug}-unverified.test"
    sub = fed.account(email=outside)
    partner.create_user("vic", emails=[{"value": outside, "primary": True}])
    refused(browser.login(fed.start, sub), "verified email address in a domain of your organisation")


def test_another_partners_person_is_never_bound_by_subject(
    make_partner: MakePartner, federate: FederateFactory, browser: Browser, engine: Engine
) -> None:
    """Partner A's IdP asserts the subject that is partner B's person's externalId: nobody is logged in."""
    victim = make_partner()
    attacker = federate()
    sub = attacker.account()
    victim.create_user("target", externalId=sub)
    refused(browser.login(attacker.start, sub), "directory at Entente")
    no_sessions(engine, victim.id)
    no_sessions(engine, attacker.partner.id)


def test_another_partners_domain_is_never_bound_by_email(
    make_partner: MakePartner, federate: FederateFactory, browser: Browser, engine: Engine
) -> None:
    """Partner A's IdP asserts a verified address in partner B's domain, of a real person of B."""
    victim = make_partner()
    victim.create_user("ceo")
    attacker = federate(binding=BindingKey.EMAIL, jit=True)
    sub = attacker.account(email=victim.email("ceo"))
    refused(browser.login(attacker.start, sub), "verified email address")
    no_sessions(engine, victim.id)
    with Session(engine) as session:  # and JIT did not create a copy of the victim in A either
        assert session.exec(select(ScimUser).where(ScimUser.partner_id == attacker.partner.id)).all() == []


# --- just-in-time creation ---------------------------------------------------------------------------


def test_jit_creates_the_person_through_scim_when_allowed(
    federate: FederateFactory, browser: Browser, engine: Engine, audit: Audit, events: Callable[[str], list[object]]
) -> None:
    fed = federate(jit=True)
    sub = fed.account()
    done = browser.login(fed.start, sub)
    assert done.status_code == 303, done.text
    with Session(engine) as session:
        created = session.exec(select(ScimUser).where(ScimUser.partner_id == fed.partner.id)).one()
    assert (created.external_id, created.user_name, created.active) == (sub, fed.partner.email(sub), True)
    actions = [(r.action, r.actor_kind) for r in audit(fed.partner.id)]
    assert ("scim.user.created", "idp_connection") in actions and ("login.succeeded", "idp_connection") in actions
    assert [e.kind for e in events(fed.partner.id)] == ["joined"]  # type: ignore[attr-defined]


def test_jit_needs_a_verified_email_in_the_partners_domains(federate: FederateFactory, browser: Browser) -> None:
    fed = federate(jit=True)
    sub = fed.account(verified=False)
    refused(browser.login(fed.start, sub), "no account can be created")


# --- what is not there -------------------------------------------------------------------------------


def test_unknown_partner_and_connection_are_404_pages(browser: Browser) -> None:
    refused(browser.get("/login/no-such-partner"), "no partner", status=404)
    refused(browser.get("/login/callback/nobody.oidc?code=x&state=y"), "no IdP connection", status=404)


def test_a_partner_without_an_idp_is_told_so(make_partner: MakePartner, browser: Browser) -> None:
    partner = make_partner()
    refused(browser.get(f"/login/{partner.slug}"), "has no identity provider")


def test_a_response_delivered_to_another_connections_callback_is_refused(
    fed: Federated, federate: FederateFactory, browser: Browser, engine: Engine
) -> None:
    """IdP mix-up: partner A's response replayed at partner B's callback path (its own transaction cookie
    travels along, since every callback shares the cookie path) is refused before any code is redeemed."""
    other = federate()
    callback = browser.sign_in_at_idp(browser.to_idp(fed.start), fed.sub)  # type: ignore[attr-defined]
    moved = callback.replace(f"/login/callback/{fed.connection_id}", f"/login/callback/{other.connection_id}")
    refused(browser.get(moved), "another identity provider")
    no_sessions(engine, other.partner.id)
    refused(browser.get(callback), "no sign-in in progress")  # a refused response spends the login


def test_an_idp_whose_discovery_names_another_issuer_is_untrusted(
    make_partner: MakePartner, oidc_provider: object, browser: Browser, engine: Engine, settings: object, audit: Audit
) -> None:
    from broker.audit.log import Actor
    from broker.federation.service import add_oidc_connection

    partner = make_partner()
    with Session(engine) as session:
        add_oidc_connection(
            session=session, settings=settings, partner_slug=partner.slug,  # type: ignore[arg-type]
            issuer=f"{oidc_provider.issuer}/", client_id="c", client_secret="s", actor=Actor("cli", "tests"),  # type: ignore[attr-defined]
        )  # fmt: skip
    refused(browser.get(f"/login/{partner.slug}"), "it must be identical")
    records = [r for r in audit(partner.id) if r.action == "login.failed"]
    assert records and records[-1].detail["error"] == "UntrustedIssuer"


def test_an_unreachable_idp_is_a_clear_page(
    make_partner: MakePartner, browser: Browser, engine: Engine, settings: object
) -> None:
    from broker.audit.log import Actor
    from broker.federation.service import add_oidc_connection

    partner = make_partner()
    with Session(engine) as session:
        add_oidc_connection(
            session=session, settings=settings, partner_slug=partner.slug,  # type: ignore[arg-type]
            issuer="http://127.0.0.1:9", client_id="c", client_secret="s", actor=Actor("cli", "tests"),
        )  # fmt: skip
    refused(browser.get(f"/login/{partner.slug}"), "could not be fetched")
