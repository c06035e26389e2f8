"""Shared fixtures: every test runs on SQLite and on the PostgreSQL at 127.0.0.1:5432, both made by Alembic.

Tests are isolated by tenancy rather than by resetting the database: each test makes its own
partners (unique slug, unique verified domain), which is also how isolation is exercised.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.audit.log import Actor, AuditRecord
from broker.db import migrate
from broker.lifecycle.events import LifecycleEvent
from broker.main import create_app
from broker.settings import Settings
from broker.tenants.models import DomainPolicy
from broker.tenants.service import add_partner, issue_scim_token

PG_ADMIN_DSN = os.environ.get("ENTENTE_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_BASE = os.environ.get("ENTENTE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
SCIM_BASE = "http://testserver/scim/v2"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
TEST_SECRET_KEY = Fernet.generate_key().decode()
TEST_AUDIT_SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()
"""The audit log's Ed25519 seed for this session (no key file is written)."""


def _create_pg_database() -> str:
    name = f"entente_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database per backend per test session, schema made by Alembic only."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'entente.db'}"
        migrate(Settings(database_url=url))
        yield url
        return
    name = _create_pg_database()
    url = f"{PG_URL_BASE}/{name}"
    try:
        migrate(Settings(database_url=url))
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        public_base_url="http://testserver",
        database_pool_size=4,
        secret_key=TEST_SECRET_KEY,
        audit_signing_key=TEST_AUDIT_SIGNING_KEY,
        delivery_backoff_seconds=0.05,
        delivery_poll_seconds=0.2,
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture(scope="session")
def engine(app: FastAPI) -> Engine:
    return app.state.engine  # type: ignore[no-any-return]


@dataclass
class PartnerHandle:
    """A partner made for one test, with a SCIM client already carrying its bearer token."""

    id: str
    slug: str
    domain: str
    token: str
    client: TestClient

    def email(self, local: str) -> str:
        return f"{local}@{self.domain}"

    def user(self, local: str, **extra: Any) -> dict[str, Any]:
        """A minimal, valid User body inside this partner's domain."""
        body: dict[str, Any] = {
            "schemas": [USER_SCHEMA],
            "userName": self.email(local),
            "emails": [{"value": self.email(local), "type": "work", "primary": True}],
        }
        body.update(extra)
        return body

    def create_user(self, local: str, **extra: Any) -> dict[str, Any]:
        response = self.client.post("/Users", json=self.user(local, **extra))
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def create_group(self, name: str, members: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "displayName": name}
        if members is not None:
            body["members"] = [{"value": m} for m in members]
        response = self.client.post("/Groups", json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]


MakePartner = Callable[..., PartnerHandle]


def new_partner(
    app: FastAPI,
    engine: Engine,
    *,
    domain_policy: DomainPolicy = DomainPolicy.ENFORCE,
    domains: list[str] | None = None,
) -> PartnerHandle:
    """A partner with a unique slug (and domain <slug>.test unless given) and a SCIM client; close its client."""
    slug = f"p{uuid.uuid4().hex[:10]}"
    domains = domains or [f"{slug}.test"]
    with Session(engine, expire_on_commit=False) as session:
        partner = add_partner(
            session=session,
            slug=slug,
            name=f"Partner {slug}",
            domains=domains,
            actor=Actor("cli", "tests"),
            domain_policy=domain_policy,
        )
        issued = issue_scim_token(
            session=session, slug=slug, expires_in=dt.timedelta(hours=1), actor=Actor("cli", "tests")
        )
    client = TestClient(
        app,
        base_url=SCIM_BASE,
        headers={"Authorization": f"Bearer {issued.secret_text}"},
        raise_server_exceptions=False,
    )
    return PartnerHandle(id=partner.id, slug=slug, domain=domains[0], token=issued.secret_text, client=client)


@pytest.fixture
def make_partner(app: FastAPI, engine: Engine) -> Iterator[MakePartner]:
    """Factory: make_partner(domain_policy=DomainPolicy.ENFORCE, domains=None) -> PartnerHandle."""
    clients: list[TestClient] = []

    def factory(domain_policy: DomainPolicy = DomainPolicy.ENFORCE, domains: list[str] | None = None) -> PartnerHandle:
        handle = new_partner(app, engine, domain_policy=domain_policy, domains=domains)
        clients.append(handle.client)
        return handle

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def partner(make_partner: MakePartner) -> PartnerHandle:
    """One enforcing partner with domain <slug>.test."""
    return make_partner()


@pytest.fixture
def events(engine: Engine) -> Callable[[str], list[LifecycleEvent]]:
    """events(partner_id) -> that partner's lifecycle events in order."""

    def read(partner_id: str) -> list[LifecycleEvent]:
        with Session(engine) as session:
            return list(
                session.exec(
                    select(LifecycleEvent).where(LifecycleEvent.partner_id == partner_id).order_by(LifecycleEvent.id)  # type: ignore[arg-type]
                ).all()
            )

    return read


@pytest.fixture
def audit(engine: Engine) -> Callable[[str], list[AuditRecord]]:
    """audit(partner_id) -> that partner's audit records in order."""

    def read(partner_id: str) -> list[AuditRecord]:
        with Session(engine) as session:
            return list(
                session.exec(
                    select(AuditRecord).where(AuditRecord.partner_id == partner_id).order_by(AuditRecord.id)  # type: ignore[arg-type]
                ).all()
            )

    return read


def assert_scim_error(response: Any, status: int, scim_type: str | None = None) -> dict[str, Any]:
    """The response is an RFC 7644 §3.12 Error with this status (as a string) and scimType."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json"), response.headers
    body = response.json()
    assert body["schemas"] == [ERROR_SCHEMA]
    assert body["status"] == str(status)
    assert isinstance(body.get("detail"), str) and body["detail"]
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body  # type: ignore[no-any-return]


# Real peers on 127.0.0.1 (tests/peers): registered once here so every module shares one
# `entente serve` per database backend and one scim2-server per session; a fixture imported into
# each test module would be a separate fixture there, and start its own process.
pytest_plugins = [
    "tests.cli_runner",
    "tests.peers.entente_process",
    "tests.peers.saml_idp_process",
    "tests.peers.scim2_server_process",
    "tests.peers.synapse_process",
]
