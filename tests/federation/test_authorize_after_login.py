"""A workspace's authorization request through a federated login, end to end.

``/oidc/authorize`` (no session) -> ``/login`` (the email question) -> the partner's real IdP
(npm oidc-provider) -> ``/login/callback/…``, which answers the authorization request itself: the
browser goes from the callback straight to the workspace with its code (or its refusal), not by way
of ``/oidc/authorize`` again. Entente answers as ``http://localhost`` here (the provider tests' app:
authlib wants an https or loopback issuer).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.sessions.models import LoginSession
from broker.sessions.service import COOKIE_NAME, find_session
from broker.settings import Settings
from tests.federation.browser import Browser
from tests.federation.conftest import Federated, FederateFactory
from tests.lifecycle.helpers import new_workspace
from tests.provider.conftest import (  # noqa: F401  (oidc_app and oidc_settings are fixtures)
    ISSUER,
    RelyingParty,
    World,
    asks_to_sign_in,
    oidc_app,
    oidc_settings,
    verify_jwt,
)


@pytest.fixture
def localhost(oidc_app: FastAPI) -> Iterator[Browser]:  # noqa: F811 (the fixture imported above)
    browser = Browser(oidc_app, base_url="http://localhost")
    yield browser
    browser.close()


@pytest.fixture
def world(
    federate: FederateFactory,
    engine: Engine,
    oidc_settings: Settings,  # noqa: F811
    localhost: Browser,
) -> tuple[World, Federated]:
    """A partner federated through the real IdP (callback at ``http://localhost``) whose ``eng`` group
    is granted a workspace."""
    fed = federate(redirect_base=oidc_settings)
    workspace = new_workspace(engine, oidc_settings)
    made = World(
        engine=engine, settings=oidc_settings, partner=fed.partner, workspace=workspace, browser=localhost.entente
    )
    made.eng_group = fed.partner.create_group("eng")
    return made, fed


def _person(world: World, fed: Federated, local: str, *, in_eng: bool) -> tuple[str, str]:
    """An IdP account and the partner's person bound to it (by externalId); their ``sub`` and SCIM id."""
    sub = fed.account()
    return sub, world.person(local, in_eng=in_eng, externalId=sub)["id"]


def _session_of(engine: Engine, cookie: str) -> LoginSession:
    with Session(engine) as session:
        login = find_session(session, cookie_value=cookie)
    assert login is not None
    return login


def _sign_in(browser: Browser, rp: RelyingParty, fed: Federated, sub: str, local: str) -> tuple[dict[str, str], str]:
    """The whole browser journey from the workspace's authorization request; the callback's redirect
    query (sent to the workspace) and the session cookie it set."""
    form_page = browser.get(f"/oidc/authorize?{urlencode(rp.authorize_params())}")
    assert form_page.status_code == 200 and asks_to_sign_in(form_page), form_page.text  # the question, in place
    answered = browser.submit(form_page, email=fed.partner.email(local))
    assert answered.status_code == 303 and answered.headers["location"].startswith(fed.provider.issuer)
    done = browser.get(browser.sign_in_at_idp(answered.headers["location"], sub))
    assert done.status_code == 303, done.text
    location = done.headers["location"]
    assert location.startswith(f"{rp.redirect_uri}?"), location  # straight to the workspace
    assert done.headers["cache-control"] == "no-store" and done.headers["referrer-policy"] == "no-referrer"
    cookie = browser.entente.cookies.get(COOKIE_NAME)
    assert cookie, done.headers
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}, cookie


def _journey(
    world: World, fed: Federated, browser: Browser, local: str, *, in_eng: bool
) -> tuple[RelyingParty, str, dict[str, str], str]:
    """A new person and client, and the person's sign-in to it: the client, the person's SCIM id, the
    callback's answer to the workspace and the session cookie."""
    sub, person_id = _person(world, fed, local, in_eng=in_eng)
    rp = world.client()
    answer, cookie = _sign_in(browser, rp, fed, sub, local)
    return rp, person_id, answer, cookie


def test_the_callback_answers_the_workspace_with_its_code(
    world: tuple[World, Federated], localhost: Browser, engine: Engine
) -> None:
    made, fed = world
    rp, person_id, answer, cookie = _journey(made, fed, localhost, "wen", in_eng=True)

    assert answer["state"] == rp.state and answer["iss"] == ISSUER and "code" in answer
    login = _session_of(engine, cookie)
    assert login.subject_id == person_id
    tokens = rp.exchange(answer["code"])
    assert tokens.status_code == 200, tokens.text
    claims = verify_jwt(
        made.browser, tokens.json()["id_token"], typ="JWT", iss=ISSUER, aud=rp.client_id, sub=person_id, nonce=rp.nonce
    )
    assert claims["sid"] == login.id
    again = made.browser.get("/oidc/authorize", params=rp.authorize_params())  # the session now answers at once
    assert again.status_code == 302 and again.headers["location"].startswith(f"{rp.redirect_uri}?code=")


def test_a_person_without_a_grant_is_signed_in_but_the_workspace_is_refused(
    world: tuple[World, Federated], localhost: Browser, engine: Engine
) -> None:
    made, fed = world
    rp, person_id, answer, cookie = _journey(made, fed, localhost, "ola", in_eng=False)

    assert (answer["error"], answer["state"], answer["iss"]) == ("access_denied", rp.state, ISSUER)
    assert "not granted" in answer["error_description"] and "code" not in answer
    assert _session_of(engine, cookie).subject_id == person_id  # the login stands; only this workspace is refused
