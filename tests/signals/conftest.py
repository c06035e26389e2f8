"""Fixtures for Shared Signals: an app answering as ``http://localhost`` (the OIDC issuer is then
``http://localhost/oidc``, which authlib accepts), the provider tests' ``World`` on it, receivers'
streams made through the SSF API, a real push receiver on 127.0.0.1, and a push sender run by hand.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.main import create_app
from broker.settings import Settings
from broker.signals.models import SecurityEvent
from broker.signals.push import SignalSender
from tests.conftest import PATCH_SCHEMA, MakePartner
from tests.lifecycle.helpers import new_workspace, run_engine
from tests.provider.conftest import RelyingParty, World, jwks
from tests.signals.receiver import SetReceiver

TRANSMITTER = "http://localhost"
"""The SSF issuer: every SET's ``iss``."""
OIDC_ISSUER = "http://localhost/oidc"
"""The ``iss`` of the ``iss_sub`` subjects: the issuer of the ID tokens the clients saw."""
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"


@pytest.fixture(scope="session")
def signals_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"public_base_url": TRANSMITTER, "signals_poll_wait_seconds": 0.6, "delivery_poll_seconds": 0.2}
    )


@pytest.fixture(scope="session")
def signals_app(signals_settings: Settings) -> Iterator[FastAPI]:
    application = create_app(signals_settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def browser(signals_app: FastAPI) -> Iterator[TestClient]:
    """The provider's user agent and the receivers' HTTP client; the app's lifespan (senders) never runs."""
    client = TestClient(signals_app, base_url=TRANSMITTER, follow_redirects=False)
    yield client
    client.close()


@pytest.fixture
def world(engine: Engine, signals_settings: Settings, make_partner: MakePartner, browser: TestClient) -> World:
    partner = make_partner()
    made = World(
        engine=engine,
        settings=signals_settings,
        partner=partner,
        workspace=new_workspace(engine, signals_settings),
        browser=browser,
    )
    made.eng_group = partner.create_group("eng")
    return made


def basic(client_id: str, secret: str | None) -> dict[str, str]:
    """RFC 6749 §2.3.1 client authentication as an ``Authorization: Basic`` header."""
    pair = f"{client_id}:{secret or ''}".encode()
    return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}


def create_stream(rp: RelyingParty, delivery: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A stream made by the receiver itself through the SSF API; its configuration."""
    response = rp.browser.post(
        "/ssf/streams", json={"delivery": delivery, **extra}, headers=basic(rp.client_id, rp.secret)
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def deactivate(world: World, subject_id: str) -> None:
    """The partner's IdP deactivates the person (SCIM PATCH active=false), and the engine runs."""
    response = world.partner.client.patch(
        f"/Users/{subject_id}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]},
    )
    assert response.status_code == 200, response.text
    run_engine(world.engine)


def sets_of(engine: Engine, stream_id: str) -> list[SecurityEvent]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(SecurityEvent).where(SecurityEvent.stream_id == stream_id).order_by(col(SecurityEvent.id))
            ).all()
        )


@dataclass
class Pusher:
    """Runs the push sender of ``broker.signals.push`` by hand, over real HTTP."""

    engine: Engine
    settings: Settings

    def until(self, done: Callable[[], bool], *, rounds: int = 60, pause: float = 0.05) -> None:
        """Run sender rounds until ``done()`` holds (or fail after ``rounds``)."""

        async def run() -> bool:
            async with httpx.AsyncClient() as http:
                sender = SignalSender(engine=self.engine, settings=self.settings, http=http)
                for _ in range(rounds):
                    await sender.run_once()
                    if done():
                        return True
                    await asyncio.sleep(pause)
            return False

        assert asyncio.run(run()), "the push sender did not get there"


@pytest.fixture
def pusher(engine: Engine, signals_settings: Settings) -> Pusher:
    return Pusher(engine, signals_settings)


@pytest.fixture
def make_receiver(browser: TestClient) -> Iterator[Callable[..., SetReceiver]]:
    """make_receiver(audience, authorization=None) -> a started receiver trusting Entente's JWKS; stopped at the end."""
    made: list[SetReceiver] = []

    def factory(audience: str, authorization: str | None = None) -> SetReceiver:
        receiver = SetReceiver(issuer=TRANSMITTER, audience=audience, keys=jwks(browser), authorization=authorization)
        made.append(receiver.start())
        return receiver

    yield factory
    for receiver in made:
        receiver.stop()
