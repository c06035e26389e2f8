"""SAML 2.0 login end to end: Entente's /login -> the pysaml2 IdP peer (HTTP-Redirect) -> the ACS (HTTP-POST).

The IdP is pysaml2 in the IdP role, its own process on 127.0.0.1, signing Response and assertion
with xmlsec1 (``tests/peers/saml_idp``); the browser is scripted HTTP (``tests/federation/browser.py``).
Both databases, through the parametrised fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
import uuid
import zlib
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import httpx
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.responses import Response

from broker.audit.log import AuditRecord
from broker.federation.base import ReplayDetected
from broker.federation.models import BindingKey
from broker.federation.saml_replay import DatabaseLedger
from broker.federation.transaction import LoginTransaction
from broker.scim.models import ScimUser
from broker.sessions.service import COOKIE_NAME, find_session
from broker.settings import Settings
from tests.federation.browser import Browser
from tests.federation.conftest import FederateFactory
from tests.federation.saml_support import (
    SamlFederateFactory,
    assert_refused,
    idp_answer,
    post_answer,
)

Audit = Callable[[str], list[AuditRecord]]
MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
PROTOCOL = "{urn:oasis:names:tc:SAML:2.0:protocol}"
ASSERTION = "{urn:oasis:names:tc:SAML:2.0:assertion}"


def _session_cookie(response: httpx.Response) -> str:
    cookie: SimpleCookie = SimpleCookie()
    for name, value in response.headers.multi_items():
        if name.lower() == "set-cookie" and value.startswith(COOKIE_NAME):
            cookie.load(value)
    return cookie[COOKIE_NAME].value


def test_a_partner_employee_signs_in_through_the_saml_idp_and_binds_to_the_scim_person(
    saml_federate: SamlFederateFactory, browser: Browser, engine: Engine, audit: Audit
) -> None:
    fed = saml_federate()
    name_id = f"pid-{uuid.uuid4().hex}"
    person = fed.partner.create_user("ada", externalId=name_id)
    login = fed.user(name_id, mail=[fed.partner.email("ada")], displayName=["Ada Lovelace"])

    redirect = browser.to_idp(f"{fed.start}?next=/workspace/home")
    assert redirect.startswith(f"{fed.idp.base_url}/sso/redirect?")
    query = parse_qs(urlsplit(redirect).query)
    request = ET.fromstring(zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15))
    assert request.tag == f"{PROTOCOL}AuthnRequest"
    assert request.get("AssertionConsumerServiceURL") == fed.acs_url
    assert request.get("Destination") == f"{fed.idp.base_url}/sso/redirect"
    assert request.findtext(f"{ASSERTION}Issuer") == fed.sp_entity_id
    assert len(request.get("ID") or "") == 65 and (request.get("ID") or "").startswith("_")
    assert len(query["RelayState"][0]) >= 43

    answer = idp_answer(browser, fed, login, authn_request=redirect)
    assert answer.action == fed.acs_url
    done = post_answer(browser, answer)

    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/workspace/home"
    with Session(engine) as session:
        row = find_session(session, cookie_value=_session_cookie(done))
    assert row is not None
    assert (row.partner_id, row.subject_id) == (fed.partner.id, person["id"])
    assert (row.upstream_issuer, row.upstream_subject) == (fed.idp.entity_id, name_id)
    assert row.upstream_session  # the AuthnStatement's SessionIndex
    records = [r for r in audit(fed.partner.id) if r.action == "login.succeeded"]
    assert len(records) == 1 and records[0].resource_id == person["id"]
    assert records[0].detail["subject"] == name_id and records[0].detail["issuer"] == fed.idp.entity_id


def test_sp_metadata_names_the_acs_and_requires_signed_assertions(
    saml_federate: SamlFederateFactory, federate: FederateFactory, browser: Browser
) -> None:
    fed = saml_federate()
    response = browser.get(f"/login/saml/{fed.connection_id}/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/samlmetadata+xml")
    root = ET.fromstring(response.content)
    assert root.get("entityID") == fed.sp_entity_id
    descriptor = root.find(f"{MD}SPSSODescriptor")
    assert descriptor is not None and descriptor.get("WantAssertionsSigned") == "true"
    services = descriptor.findall(f"{MD}AssertionConsumerService")
    assert [(s.get("Binding"), s.get("Location")) for s in services] == [
        ("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST", fed.acs_url)
    ]
    oidc = federate()
    assert browser.get(f"/login/saml/{oidc.connection_id}/metadata").status_code == 404
    assert browser.get("/login/saml/nobody.saml/metadata").status_code == 404


def test_the_acs_and_the_oidc_callback_take_only_their_own_protocol(
    saml_federate: SamlFederateFactory, federate: FederateFactory, browser: Browser
) -> None:
    saml, oidc = saml_federate(), federate()
    wrong_method = browser.get(f"/login/callback/{saml.connection_id}?state=x&code=y")
    assert_refused(wrong_method, f"the identity provider of '{saml.connection_id}' answers with an HTTP POST")
    posted = browser.request("POST", f"/login/callback/{oidc.connection_id}", data={"SAMLResponse": "eA=="})
    assert_refused(posted, f"the identity provider of '{oidc.connection_id}' answers with an HTTP GET")
    as_json = browser.request("POST", f"/login/callback/{saml.connection_id}", json={"SAMLResponse": "x"})
    assert_refused(as_json, "a SAML response must be posted as application/x-www-form-urlencoded")


def test_binds_by_email_only_when_the_connection_vouches_for_the_idp(
    saml_federate: SamlFederateFactory, app: FastAPI, engine: Engine
) -> None:
    vouched = saml_federate(binding=BindingKey.EMAIL, email_verified=True)
    person = vouched.partner.create_user("noor")
    login = vouched.user(mail=[vouched.partner.email("Noor")])
    browser = Browser(app)
    try:
        done = post_answer(browser, idp_answer(browser, vouched, login))
    finally:
        browser.close()
    assert done.status_code == 303, done.text
    with Session(engine) as session:
        row = find_session(session, cookie_value=_session_cookie(done))
    assert row is not None and row.subject_id == person["id"]

    unvouched = saml_federate(binding=BindingKey.EMAIL)
    unvouched.partner.create_user("omar")
    login = unvouched.user(mail=[unvouched.partner.email("omar")])
    browser = Browser(app)
    try:
        refused = post_answer(browser, idp_answer(browser, unvouched, login))
    finally:
        browser.close()
    assert_refused(refused, "your identity provider did not send a verified email address in a domain of your")


def test_jit_creates_the_person_from_the_mapped_attributes(
    saml_federate: SamlFederateFactory, browser: Browser, engine: Engine
) -> None:
    fed = saml_federate(jit=True, email_verified=True)
    address = fed.partner.email("grace")
    login = fed.user("pid-grace-" + uuid.uuid4().hex, mail=[address], displayName=["Grace Hopper"], groups=["eng"])
    done = post_answer(browser, idp_answer(browser, fed, login))
    assert done.status_code == 303, done.text
    with Session(engine) as session:
        created = session.exec(
            select(ScimUser).where(ScimUser.partner_id == fed.partner.id, ScimUser.user_name == address)
        ).one()
    assert created.external_id and created.external_id.startswith("pid-grace-")
    assert created.active and created.display_name == "Grace Hopper"


def test_saml_transaction_cookie_survives_the_idps_cross_site_post_over_https(settings: Settings) -> None:
    transaction = LoginTransaction.start(connection_id="p.saml", next_path="/")
    https = settings.model_copy(update={"public_base_url": "https://entente.example"})
    saml, oidc, plain = Response(), Response(), Response()
    transaction.set_cookie(saml, https, cross_site_post=True)
    transaction.set_cookie(oidc, https)
    transaction.set_cookie(plain, settings, cross_site_post=True)
    assert "samesite=none" in saml.headers["set-cookie"].lower() and "secure" in saml.headers["set-cookie"].lower()
    assert "samesite=lax" in oidc.headers["set-cookie"].lower()
    assert "samesite=lax" in plain.headers["set-cookie"].lower()  # browsers drop SameSite=None without Secure


def test_the_replay_ledger_lets_exactly_one_of_concurrent_uses_through(engine: Engine) -> None:
    ledger = DatabaseLedger(engine)
    assertion_id = f"_{uuid.uuid4().hex}"
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def spend() -> None:
        barrier.wait()
        try:
            ledger.consume(connection_id="p.saml", assertion_id=assertion_id, expires_at=expires)
            outcomes.append("accepted")
        except ReplayDetected:
            outcomes.append("replay")

    threads = [threading.Thread(target=spend) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["accepted"] + ["replay"] * 5
    ledger.consume(connection_id="q.saml", assertion_id=assertion_id, expires_at=expires)  # per connection
