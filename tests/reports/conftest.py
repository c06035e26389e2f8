"""One stale-access scenario per database, built through the real paths, shared by the report tests.

Partner A (ann, bob, cat, dan, eve, fay, ola), partner B (bea) and partner C (no feed yet) push over
SCIM; policies grant workspaces `live` (a real scim2-server), `down` (an address nobody serves, so
deliveries there become dead letters) and `held` (paused, so what is queued there stays pending).
The delivery worker runs, dan leaves (his revocations in `down` die), someone creates an account
for ola by hand in `live` and `entente workspace reconcile` finds it, eve leaves while `held` is
paused, bob and cat log in. Then time passes, by moving timestamps back (``age``): the only writes
that do not go through Entente's own code, because the report is about what months do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Table, update
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from broker.audit.log import Actor
from broker.federation.base import FederatedIdentity
from broker.lifecycle.events import LifecycleEvent
from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.worker import DeliveryWorker
from broker.reports.scope import PartnerRef, ReportOptions, ReportScope
from broker.scim.models import ScimUser
from broker.sessions.models import LoginSession
from broker.sessions.service import start_session
from broker.settings import Settings
from broker.tenants.models import Partner, ScimToken
from broker.tenants.service import issue_scim_token, revoke_scim_token
from broker.types import utcnow
from broker.workspaces.models import Workspace, WorkspaceStatus
from broker.workspaces.service import set_workspace_status
from tests.cli_runner import Run
from tests.conftest import PATCH_SCHEMA, TEST_SECRET_KEY, USER_SCHEMA, PartnerHandle, new_partner
from tests.lifecycle.helpers import apply_policy, new_workspace, run_engine
from tests.peers.scim2_server_process import Scim2Server

OPERATOR_TOKEN = "ent_report_operator-token-for-tests-only-0123456789"
TESTS = Actor("cli", "tests")
LEAVE = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]}


def cli(settings: Settings, *args: str) -> Run:
    """`entente ARGS` in this process, on the session's database (and its sealing key)."""
    from broker.cli import app

    env = {"ENTENTE_DATABASE_URL": settings.database_url, "ENTENTE_SECRET_KEY": TEST_SECRET_KEY, "COLUMNS": "200"}
    done = CliRunner().invoke(app, list(args), env=env)
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return Run(done.exit_code, done.stdout, done.stderr)


def deliver(engine: Engine, settings: Settings) -> None:
    """Engine and delivery rounds until nothing is due; one attempt per task, so a failure is a dead letter."""
    once = settings.model_copy(update={"delivery_max_attempts": 1})

    async def run() -> None:
        async with DeliveryWorker(engine=engine, settings=once) as worker:
            for _ in range(20):
                if not await worker.run_once():
                    return

    asyncio.run(run())


def age(engine: Engine, table: Any, values: dict[str, Any], **where: Any) -> None:
    """Set columns of the rows matching ``where`` (column == value): time passing, for a report about time."""
    t: Table = table.__table__
    with Session(engine) as session:
        session.execute(update(t).where(*(t.c[k] == v for k, v in where.items())).values(**values))
        session.commit()


@dataclass
class Scenario:
    a: PartnerHandle
    b: PartnerHandle
    c: PartnerHandle
    live: Workspace
    down: Workspace
    held: Workspace
    people: dict[str, dict[str, Any]]
    """A's people (and B's bea) by name, as SCIM returned them."""
    orphan_remote_id: str
    reconciled: tuple[dt.datetime, dt.datetime]
    """Just before and just after `entente workspace reconcile` ran."""
    t0: dt.datetime
    """The instant every aged timestamp is relative to."""
    old_token_id: str
    revoked_token_id: str

    def ref(self, handle: PartnerHandle) -> PartnerRef:
        return PartnerRef(handle.id, handle.slug)

    def scope(self, handle: PartnerHandle | None = None, workspace: Workspace | None = None) -> ReportScope:
        from broker.reports.scope import WorkspaceRef

        return ReportScope(
            partner=self.ref(handle) if handle else None,
            workspace=WorkspaceRef(workspace.id, workspace.slug) if workspace else None,
        )

    def options(self, now: dt.datetime | None = None) -> ReportOptions:
        return ReportOptions(
            inactive_days=90, silent_feed_days=30, token_expiry_days=30, token_unused_days=30, now=now or utcnow()
        )


def _policy(s: Any) -> str:
    a, b = s["a"], s["b"]
    return f"""
- id: {a}-eng
  tenant: {a}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {s["live"]}, role: member }}, {{ workspace: {s["down"]}, role: member }}]
- id: {a}-temp
  tenant: {a}
  when: {{ groups_any: [contractors] }}
  grant: [{{ workspace: {s["live"]}, role: member }}]
  until: 2030-01-01
- id: {a}-held
  tenant: {a}
  when: {{ groups_any: [held] }}
  grant: [{{ workspace: {s["held"]}, role: member }}]
- id: {b}-eng
  tenant: {b}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {s["live"]}, role: member }}]
"""


def _login(engine: Engine, partner: PartnerHandle, subject_id: str) -> str:
    identity = FederatedIdentity(
        tenant_id=partner.id, issuer="https://idp.example", subject=subject_id, email=None, email_verified=False
    )
    with Session(engine, expire_on_commit=False) as session:
        started = start_session(session, identity=identity, subject_id=subject_id, lifetime=dt.timedelta(hours=8))
        session.commit()
        return started.row.id


def _build(app: FastAPI, engine: Engine, settings: Settings, scim2_server: Scim2Server) -> Scenario:
    a, b, c = (new_partner(app, engine) for _ in range(3))
    live = new_workspace(engine, settings, values={"base_url": scim2_server.base_url, "token": scim2_server.token})
    down, held = new_workspace(engine, settings), new_workspace(engine, settings)
    with Session(engine) as session:
        set_workspace_status(session, slug=held.slug, status=WorkspaceStatus.PAUSED, reason="tests", actor=TESTS)
    slugs = {"a": a.slug, "b": b.slug, "live": live.slug, "down": down.slug, "held": held.slug}
    apply_policy(engine, _policy(slugs), partner_ids=[a.id, b.id, c.id])

    people = {name: a.create_user(name) for name in ("ann", "bob", "cat", "dan", "eve", "fay", "ola")}
    people["bea"] = b.create_user("bea")
    a.create_group("eng", members=[people[n]["id"] for n in ("ann", "bob", "cat", "dan")])
    a.create_group("contractors", members=[people["fay"]["id"]])
    a.create_group("held", members=[people["eve"]["id"]])
    b.create_group("eng", members=[people["bea"]["id"]])
    deliver(engine, settings)

    assert a.client.patch(f"/Users/{people['dan']['id']}", json=LEAVE).status_code == 200
    deliver(engine, settings)  # removed from live; in down his revocations become dead letters

    hand_made = {"schemas": [USER_SCHEMA], "userName": f"ola-{uuid.uuid4().hex[:8]}", "externalId": people["ola"]["id"]}
    created = httpx.post(
        f"{scim2_server.base_url}/Users", json=hand_made, headers={"Authorization": f"Bearer {scim2_server.token}"}
    )
    assert created.status_code == 201, created.text
    before = utcnow()
    reconciled = cli(settings, "workspace", "reconcile", live.slug)
    after = utcnow()
    assert reconciled.code == 0, reconciled
    assert f"orphaned  {people['ola']['id']}" in reconciled.stdout, reconciled.stdout

    assert a.client.patch(f"/Users/{people['eve']['id']}", json=LEAVE).status_code == 200
    run_engine(engine)  # her revocations in held wait: the workspace is paused

    _login(engine, a, people["bob"]["id"])
    _login(engine, a, people["cat"]["id"])
    with Session(engine, expire_on_commit=False) as session:
        old = issue_scim_token(session=session, slug=a.slug, expires_in=dt.timedelta(days=365), actor=TESTS)
        revoked = issue_scim_token(session=session, slug=a.slug, expires_in=dt.timedelta(days=1), actor=TESTS)
        revoke_scim_token(session=session, slug=a.slug, token_id=revoked.token.id, actor=TESTS)

    t0 = utcnow().replace(microsecond=0)
    for name in ("ann", "bob", "cat"):
        age(engine, ScimUser, {"updated_at": t0 - dt.timedelta(days=120)}, id=people[name]["id"])
    age(engine, LoginSession, {"created_at": t0 - dt.timedelta(days=10)}, subject_id=people["bob"]["id"])
    age(engine, LoginSession, {"created_at": t0 - dt.timedelta(days=100)}, subject_id=people["cat"]["id"])
    age(engine, AccessGrant, {"until": t0 - dt.timedelta(days=2)}, subject_id=people["fay"]["id"])
    age(engine, LifecycleEvent, {"occurred_at": t0 - dt.timedelta(days=60)}, partner_id=b.id)
    age(engine, Partner, {"created_at": t0 - dt.timedelta(days=40)}, id=c.id)
    age(engine, ScimToken, {"created_at": t0 - dt.timedelta(days=60)}, id=old.token.id)
    return Scenario(
        a=a, b=b, c=c, live=live, down=down, held=held, people=people,
        orphan_remote_id=created.json()["id"], reconciled=(before, after), t0=t0,
        old_token_id=old.token.id, revoked_token_id=revoked.token.id,
    )  # fmt: skip


@pytest.fixture(scope="session")
def scenario(app: FastAPI, engine: Engine, settings: Settings, scim2_server: Scim2Server) -> Iterator[Scenario]:
    """The scenario above, once per database."""
    built = _build(app, engine, settings, scim2_server)
    yield built
    for handle in (built.a, built.b, built.c):
        handle.client.close()


@pytest.fixture
def operator_app(app: FastAPI, settings: Settings) -> Iterator[FastAPI]:
    """The session's app with an operator token configured for this test (restored afterwards)."""
    digest = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
    app.state.settings = settings.model_copy(update={"audit_operator_token_sha256": digest})
    try:
        yield app
    finally:
        app.state.settings = settings
