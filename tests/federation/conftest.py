"""Federated-login fixtures: partners connected to the real oidc-provider, a scripted browser, a lying IdP.

Each test makes its own partner (``make_partner``), registers its own client at the IdP with its own
redirect URI, and uses IdP accounts with unique subjects, so tests share the provider process
without sharing state. Everything runs on SQLite and on PostgreSQL (``tests/conftest.py``).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.audit.log import Actor
from broker.federation.cache import AdapterCache, callback_url
from broker.federation.models import BindingKey
from broker.federation.service import add_oidc_connection
from broker.settings import Settings
from tests.conftest import MakePartner, PartnerHandle
from tests.federation.browser import Browser
from tests.federation.saml_support import saml_federate  # noqa: F401  (SAML connections to the pysaml2 IdP peer)
from tests.peers.oidc_provider_process import OidcProvider, oidc_provider  # noqa: F401  (the session fixture)


@dataclass
class Federated:
    """A partner whose IdP is the test oidc-provider, through one connection."""

    partner: PartnerHandle
    connection_id: str
    client_id: str
    client_secret: str
    provider: OidcProvider

    @property
    def start(self) -> str:
        """The partner's direct sign-in link."""
        return f"/login/{self.partner.slug}"

    def account(self, sub: str | None = None, *, email: str | None = None, verified: bool = True, **claims: Any) -> str:
        """An account at the IdP (email in the partner's domain unless given); returns its ``sub``."""
        sub = sub or f"sub-{uuid.uuid4().hex[:12]}"
        address = email if email is not None else self.partner.email(sub)
        self.provider.put_account(sub, email=address, email_verified=verified, name=f"Person {sub}", **claims)
        return sub


FederateFactory = Callable[..., Federated]


@pytest.fixture
def federate(
    make_partner: MakePartner,
    oidc_provider: OidcProvider,  # noqa: F811 (the fixture imported above)
    engine: Engine,
    settings: Settings,
) -> FederateFactory:
    """federate(binding=externalId, jit=False, partner=None, username_claim=..., client_secret=None) -> Federated."""

    def factory(
        *,
        binding: BindingKey = BindingKey.EXTERNAL_ID,
        jit: bool = False,
        partner: PartnerHandle | None = None,
        username_claim: str = "preferred_username",
        client_secret: str | None = None,
        redirect_base: Settings | None = None,
    ) -> Federated:
        partner = partner or make_partner()
        connection_id = f"{partner.slug}.oidc"
        redirects = [callback_url(redirect_base or settings, connection_id)]
        client_id, secret = oidc_provider.register_client(redirects)
        with Session(engine) as session:
            add_oidc_connection(
                session=session,
                settings=settings,
                partner_slug=partner.slug,
                issuer=oidc_provider.issuer,
                client_id=client_id,
                client_secret=client_secret or secret,
                actor=Actor("cli", "tests"),
                binding_key=binding,
                username_claim=username_claim,
                jit=jit,
            )
        return Federated(partner, connection_id, client_id, secret, oidc_provider)

    return factory


@pytest.fixture
def fed(federate: FederateFactory) -> Federated:
    """A partner binding by externalId, with one active person whose externalId is the IdP account's sub."""
    federated = federate()
    sub = federated.account()
    federated.partner.create_user("kim", externalId=sub)
    federated.sub = sub  # type: ignore[attr-defined]
    return federated


@pytest.fixture
def browser(app: FastAPI) -> Iterator[Browser]:
    client = Browser(app)
    yield client
    client.close()


# --- a lying IdP: the real one's answers, rewritten in flight ---------------------------------------


def b64json(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))  # type: ignore[no-any-return]


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@dataclass
class Tamper(httpx.AsyncBaseTransport):
    """Entente's HTTP to the IdP, passed through to the real oidc-provider and rewritten on the way back.

    ``token`` rewrites the token response, ``jwks(doc, fetch_number)`` the key set, ``userinfo`` the
    userinfo claims. ``key`` is an RSA key the tests sign with; publish it with ``publish_key``.
    """

    token: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    jwks: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    userinfo: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "tests-key", "use": "sig"})
    )
    jwks_fetches: int = 0
    userinfo_calls: int = 0

    def publish_key(self, from_fetch: int = 1) -> None:
        """Add ``key`` to the IdP's JWKS from the ``from_fetch``-th fetch on (2: a rotation mid-flow)."""

        def add(doc: dict[str, Any], number: int) -> dict[str, Any]:
            if number >= from_fetch:
                doc["keys"].append(self.key.as_dict(private=False))
            return doc

        self.jwks = add

    def resign(self, id_token: str, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """The ID token's claims with ``claims`` applied (``None`` removes one), signed with ``key``."""
        payload = b64json(id_token.split(".")[1])
        for name, value in claims.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        return jwt.encode({"alg": "RS256", "kid": self.key.kid, **(header or {})}, payload, self.key)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with httpx.AsyncHTTPTransport() as inner:
            upstream = await inner.handle_async_request(request)
            body = await upstream.aread()
        path = request.url.path
        if path == "/jwks":
            self.jwks_fetches += 1
        hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        if path == "/token":
            hook = self.token
        elif path == "/me":
            self.userinfo_calls += 1
            hook = self.userinfo
        elif path == "/jwks" and self.jwks is not None:
            number, rewrite = self.jwks_fetches, self.jwks
            hook = lambda doc: rewrite(doc, number)  # noqa: E731
        if hook is not None and upstream.status_code == 200:
            body = json.dumps(hook(json.loads(body))).encode()
        headers = [
            (k, v) for k, v in upstream.headers.items() if k.lower() not in ("content-length", "content-encoding")
        ]
        return httpx.Response(upstream.status_code, headers=headers, content=body)


@pytest.fixture
def tamper(app: FastAPI) -> Iterator[Tamper]:
    """Route the app's IdP traffic through a fresh ``Tamper`` (and a fresh adapter cache) for one test."""
    previous = getattr(app.state, "idp_adapters", None)
    transport = Tamper()
    app.state.idp_adapters = AdapterCache(transport=transport)
    yield transport
    app.state.idp_adapters = previous if previous is not None else AdapterCache()
