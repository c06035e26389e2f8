"""Fixtures for the OpenID Provider: an app whose issuer is ``http://localhost/oidc``, partner people with
grants, login sessions made directly (as federation would), and registered relying parties.

The app is a second ``create_app`` on the session's database: authlib refuses an issuer that is
neither https nor loopback, and the suite's shared app answers as ``http://testserver``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from broker.audit.log import Actor
from broker.federation.base import FederatedIdentity
from broker.main import create_app
from broker.provider.clients import add_client, sha256_hex
from broker.sessions.service import COOKIE_NAME, start_session
from broker.settings import Settings
from broker.workspaces.models import Workspace
from tests.conftest import MakePartner, PartnerHandle
from tests.lifecycle.helpers import apply_policy, new_workspace

ISSUER = "http://localhost/oidc"
OPERATOR = Actor(kind="cli", id="provider-tests")


@pytest.fixture(scope="session")
def oidc_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_base_url": "http://localhost"})


@pytest.fixture(scope="session")
def oidc_app(oidc_settings: Settings) -> Iterator[FastAPI]:
    application = create_app(oidc_settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def browser(oidc_app: FastAPI) -> Iterator[TestClient]:
    """A user agent (cookie jar, no automatic redirects) talking to the provider.

    Not entered as a context manager: the app's lifespan (delivery worker, logout sender) does not
    run, so tests decide when the engine runs and when logouts are sent.
    """
    client = TestClient(oidc_app, base_url="http://localhost", follow_redirects=False)
    yield client
    client.close()


def pkce_pair() -> tuple[str, str]:
    """A code_verifier and its S256 code_challenge (RFC 7636 §4.1–§4.2)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(response: httpx2.Response) -> dict[str, str]:
    """The single-valued query parameters of a redirect's Location."""
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def asks_to_sign_in(response: httpx2.Response | httpx.Response) -> bool:
    """Whether an authorization answer asks the person to sign in: Entente's email question in place
    (a browser without any session) or a redirect to the login page."""
    if response.status_code == 200:
        return '<form method="post" action="/login">' in response.text and 'name="email"' in response.text
    return response.status_code == 302 and urlsplit(response.headers["location"]).path == "/login"


@dataclass
class RelyingParty:
    """A client registered for one workspace, and the requests it makes (as a real RP would)."""

    client_id: str
    secret: str | None
    redirect_uri: str
    workspace: Workspace
    browser: TestClient
    verifier: str = ""
    nonce: str = ""
    state: str = ""

    def auth(self) -> httpx2.BasicAuth | None:
        return httpx2.BasicAuth(self.client_id, self.secret) if self.secret else None

    def _post(self, path: str, data: dict[str, Any]) -> httpx2.Response:
        auth = self.auth()
        if auth is None:
            return self.browser.post(path, data=data)
        return self.browser.post(path, data=data, auth=auth)

    def authorize_params(self, **overrides: Any) -> dict[str, Any]:
        """A complete, valid authorization request (a new state, nonce and PKCE pair), with overrides."""
        self.verifier, challenge = pkce_pair()
        self.nonce, self.state = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        params: dict[str, Any] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid profile email",
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def authorize(self, **overrides: Any) -> httpx2.Response:
        return self.browser.get("/oidc/authorize", params=self.authorize_params(**overrides))

    def code(self, **overrides: Any) -> str:
        params = query_of(self.authorize(**overrides))
        assert "code" in params, params
        assert params["state"] == self.state and params["iss"] == ISSUER
        return params["code"]

    def token(self, data: dict[str, Any]) -> httpx2.Response:
        if self.secret is None:
            data = {"client_id": self.client_id, **data}
        return self._post("/oidc/token", data)

    def exchange(self, code: str, **overrides: Any) -> httpx2.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": self.verifier,
        }
        data.update(overrides)
        return self.token({k: v for k, v in data.items() if v is not None})

    def login_flow(self, **overrides: Any) -> dict[str, Any]:
        """Authorize, exchange: the token response."""
        response = self.exchange(self.code(**overrides))
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def refresh(self, refresh_token: str, **extra: Any) -> httpx2.Response:
        return self.token({"grant_type": "refresh_token", "refresh_token": refresh_token, **extra})

    def introspect(self, token: str, **extra: Any) -> dict[str, Any]:
        response = self._post("/oidc/introspect", {"token": token, **extra})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def revoke(self, token: str, **extra: Any) -> httpx2.Response:
        data = {"token": token, **extra}
        if self.secret is None:
            data["client_id"] = self.client_id
        return self._post("/oidc/revoke", data)


@dataclass
class World:
    """One partner, one workspace its ``eng`` group is granted, and helpers around them."""

    engine: Engine
    settings: Settings
    partner: PartnerHandle
    workspace: Workspace
    browser: TestClient
    eng_group: dict[str, Any] = field(default_factory=dict)

    def person(self, local: str, *, in_eng: bool = True, **extra: Any) -> dict[str, Any]:
        """A partner user (granted the workspace when in ``eng``), with ``extra`` attributes."""
        user = self.partner.create_user(
            local,
            displayName=f"{local.title()} Example",
            name={"givenName": local.title(), "familyName": "Example"},
            **extra,
        )
        if in_eng:
            response = self.partner.client.patch(
                f"/Groups/{self.eng_group['id']}",
                json={
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}],
                },
            )
            assert response.status_code in (200, 204), response.text
        self.regrant()
        return user

    def regrant(self) -> None:
        """Put the workspace's policy in force again and re-decide the partner's people."""
        apply_policy(
            self.engine,
            f"""
- id: {self.partner.slug}-eng
  tenant: {self.partner.slug}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {self.workspace.slug}, role: member }}]
""",
            partner_ids=[self.partner.id],
        )

    def login(self, subject_id: str, *, browser: TestClient | None = None) -> str:
        """A live LoginSession for the person, its cookie set in the browser (as federation would); its id."""
        with Session(self.engine, expire_on_commit=False) as session:
            identity = FederatedIdentity(
                tenant_id=self.partner.id,
                issuer="https://idp.partner.example",
                subject=f"upstream-{subject_id}",
                email=None,
                email_verified=False,
                session_ref=None,
            )
            started = start_session(session, identity=identity, subject_id=subject_id, lifetime=dt.timedelta(hours=1))
            session.commit()
        (browser or self.browser).cookies.set(COOKIE_NAME, started.cookie_value)
        return started.row.id

    def client(
        self,
        *,
        public: bool = False,
        backchannel: str | None = None,
        workspace: Workspace | None = None,
        post_logout: tuple[str, ...] = (),
    ) -> RelyingParty:
        slug = f"rp-{uuid.uuid4().hex[:10]}"
        redirect_uri = f"https://{slug}.example/callback"
        with Session(self.engine, expire_on_commit=False) as session:
            added = add_client(
                session,
                slug=slug,
                workspace_slug=(workspace or self.workspace).slug,
                redirect_uris=[redirect_uri],
                backchannel_logout_uri=backchannel,
                post_logout_redirect_uris=post_logout,
                public=public,
                actor=OPERATOR,
            )
        return RelyingParty(slug, added.secret, redirect_uri, workspace or self.workspace, self.browser)

    def expire(self, model: type[SQLModel], secret: str, *, ago: dt.timedelta = dt.timedelta(seconds=1)) -> None:
        """Move the ``expires_at`` of the code or token row keyed by this secret's SHA-256 into the past."""
        table = model.__table__  # type: ignore[attr-defined]
        key = table.primary_key.columns.values()[0]
        with Session(self.engine) as session:
            session.execute(
                update(table).where(key == sha256_hex(secret)).values(expires_at=dt.datetime.now(dt.UTC) - ago)
            )
            session.commit()


@pytest.fixture
def world(engine: Engine, oidc_settings: Settings, make_partner: MakePartner, browser: TestClient) -> World:
    partner = make_partner()
    workspace = new_workspace(engine, oidc_settings)
    made = World(engine=engine, settings=oidc_settings, partner=partner, workspace=workspace, browser=browser)
    made.eng_group = partner.create_group("eng")
    return made


def jwks(browser: TestClient) -> KeySet:
    response = browser.get("/oidc/jwks")
    assert response.status_code == 200
    return KeySet.import_key_set(response.json())


def verify_jwt(browser: TestClient, token: str, *, typ: str, **claims: Any) -> dict[str, Any]:
    """Verify signature (RS256, against the published JWKS), ``typ``, and each given claim's value."""
    decoded = jwt.decode(token, jwks(browser), algorithms=["RS256"])
    assert decoded.header["typ"] == typ and decoded.header["alg"] == "RS256" and decoded.header.get("kid")
    options: dict[str, Any] = {name: {"essential": True, "value": value} for name, value in claims.items()}
    registry = jwt.JWTClaimsRegistry(leeway=5, **options)
    registry.validate(decoded.claims)
    return dict(decoded.claims)
