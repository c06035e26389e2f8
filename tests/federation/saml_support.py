"""SAML login fixtures: partners connected to the pysaml2 IdP peer, and the scripted browser's SAML steps.

Each test makes its own partner and SAML connection (its own SP entity ID and ACS URL), registers
Entente's SP metadata for it at the IdP (fetched from Entente's metadata endpoint, as an IdP admin
would import it) and its own IdP users, so tests share the one IdP process without sharing state.
The browser (``tests/federation/browser.py``) talks to Entente in process and to the IdP over HTTP;
``idp_answer`` stops before the IdP's auto-posting form reaches Entente, so a test can post it as
it is, or forged.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.audit.log import Actor
from broker.federation.models import BindingKey
from broker.federation.service import add_saml_connection
from tests.conftest import MakePartner, PartnerHandle
from tests.federation.browser import Browser
from tests.peers.saml_idp_process import SamlIdp

__all__ = [
    "IdpAnswer",
    "SamlFederated",
    "SamlFederateFactory",
    "assert_refused",
    "idp_answer",
    "post_answer",
    "register_sp",
    "saml_federate",
]


class _Form(HTMLParser):
    """The first form of a page: its action and its named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._closed = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
        elif tag == "input" and self.action is not None and not self._closed and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._closed = True


def _form(page: httpx.Response) -> _Form:
    parser = _Form()
    parser.feed(page.text)
    assert parser.action is not None, (page.status_code, page.text[:2000])
    return parser


@dataclass
class SamlFederated:
    """A partner whose IdP is the test pysaml2 IdP, through one SAML connection."""

    partner: PartnerHandle
    connection_id: str
    idp: SamlIdp

    @property
    def start(self) -> str:
        return f"/login/{self.partner.slug}"

    @property
    def acs_url(self) -> str:
        return f"http://testserver/login/callback/{self.connection_id}"

    @property
    def sp_entity_id(self) -> str:
        return f"http://testserver/login/saml/{self.connection_id}/metadata"

    def user(self, name_id: str | None = None, *, name_id_format: str | None = None, **attributes: list[str]) -> str:
        """An IdP user (a login name of its own) with this NameID (unique unless given) and attributes
        (by default ``mail`` in the partner's domain); returns the login name."""
        login = f"u-{uuid.uuid4().hex[:12]}"
        attributes.setdefault("mail", [self.partner.email(login)])
        self.idp.put_user(login, name_id=name_id or f"pid-{login}", name_id_format=name_id_format, **attributes)
        return login


SamlFederateFactory = Callable[..., SamlFederated]


def register_sp(app: FastAPI, idp: SamlIdp, connection_id: str) -> None:
    """Import Entente's SP metadata for the connection at the IdP, as the partner's IdP admin would."""
    client = TestClient(app, base_url="http://testserver")  # no lifespan: no worker started for one GET
    try:
        metadata = client.get(f"/login/saml/{connection_id}/metadata")
    finally:
        client.close()
    assert metadata.status_code == 200, metadata.text
    idp.register_sp(metadata.text)


@pytest.fixture
def saml_federate(make_partner: MakePartner, saml_idp: SamlIdp, engine: Engine, app: FastAPI) -> SamlFederateFactory:
    """saml_federate(binding=externalId, jit=False, email_verified=False, username_claim="mail") -> SamlFederated."""

    def factory(
        *,
        binding: BindingKey = BindingKey.EXTERNAL_ID,
        jit: bool = False,
        email_verified: bool = False,
        username_claim: str = "mail",
    ) -> SamlFederated:
        partner = make_partner()
        with Session(engine) as session:
            connection = add_saml_connection(
                session=session,
                partner_slug=partner.slug,
                metadata_xml=saml_idp.metadata(),
                actor=Actor("cli", "tests"),
                binding_key=binding,
                username_claim=username_claim,
                jit=jit,
                email_verified=email_verified,
            )
            connection_id = connection.id
        register_sp(app, saml_idp, connection_id)
        return SamlFederated(partner=partner, connection_id=connection_id, idp=saml_idp)

    return factory


@dataclass
class IdpAnswer:
    """The IdP's auto-posting form, not yet sent to Entente."""

    action: str
    relay_state: str
    document: bytes
    """The SAML Response XML, decoded from the form's ``SAMLResponse``."""


def idp_answer(
    browser: Browser, fed: SamlFederated, login: str, *, start: str | None = None, authn_request: str | None = None
) -> IdpAnswer:
    """Entente's sign-in link (``start``, default the partner's) -> the IdP's login form -> sign in as
    ``login`` -> the form the IdP returns. ``authn_request``: the IdP URL Entente already redirected to."""
    authn_request = authn_request or browser.to_idp(start or fed.start)
    login_form = _form(browser.get(authn_request))
    answer = browser.request(
        "POST", urljoin(authn_request, login_form.action), data={**login_form.fields, "login": login}
    )
    form = _form(answer)
    assert set(form.fields) >= {"SAMLResponse", "RelayState"}, form.fields
    return IdpAnswer(
        action=str(form.action),
        relay_state=form.fields["RelayState"],
        document=base64.b64decode(form.fields["SAMLResponse"]),
    )


def post_answer(
    browser: Browser, answer: IdpAnswer, document: bytes | None = None, *, relay_state: str | None = None
) -> httpx.Response:
    """Post the IdP's answer (or ``document`` in its place) to Entente's ACS, as the browser would."""
    body = document if document is not None else answer.document
    return browser.request(
        "POST",
        answer.action,
        data={
            "SAMLResponse": base64.b64encode(body).decode(),
            "RelayState": answer.relay_state if relay_state is None else relay_state,
        },
    )


def assert_refused(response: httpx.Response, reason: str, *, status: int = 400) -> None:
    """A refusal page (never a 500, never a session) whose alert says ``reason``."""
    assert response.status_code == status, (response.status_code, response.text[:3000])
    assert response.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in response.text
    assert escape(reason, quote=True) in response.text, response.text[:3000]
    assert "entente_session=" not in response.headers.get("set-cookie", "")
