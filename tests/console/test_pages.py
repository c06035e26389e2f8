"""The admin console over HTTP (issue 6): sign-in, every page with data, roles, CSRF, the kill switch form."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.audit.log import AuditRecord
from broker.console.oidc import CONSOLE_WORKSPACE, ensure_console_client
from broker.federation.base import FederatedIdentity
from broker.federation.models import IdPConnection
from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.killswitch import suspend_person
from broker.lifecycle.outbox import DeliveryTask, TaskState
from broker.lifecycle.suspensions import live_suspensions
from broker.sessions.service import COOKIE_NAME, start_session
from broker.settings import Settings
from broker.workspaces.models import Workspace
from tests.conftest import MakePartner, PartnerHandle
from tests.console.conftest import PASSWORD, browser_for, csrf_of
from tests.lifecycle.helpers import OPERATOR, apply_policy, grants_of, new_workspace, run_engine


@dataclass
class Scene:
    """Two partners: ``acme`` (alice in eng, ada the console admin) and ``other`` (eve in eng); one workspace."""

    acme: PartnerHandle
    other: PartnerHandle
    workspace: Workspace
    alice: dict[str, Any]
    ada: dict[str, Any]
    eve: dict[str, Any]
    dead_task: int


@pytest.fixture
def scene(engine: Engine, console_settings: Settings, make_partner: MakePartner) -> Scene:
    acme, other = make_partner(), make_partner()
    with Session(engine) as session:
        ensure_console_client(session, settings=console_settings)
    workspace = new_workspace(engine, console_settings)
    people = {}
    for partner, local in ((acme, "alice"), (acme, "ada"), (other, "eve")):
        people[local] = partner.create_user(local, displayName=f"{local.title()} Example")
    acme.create_group("eng", members=[people["alice"]["id"], people["ada"]["id"]])
    acme.create_group("console-admins", members=[people["ada"]["id"]])
    other.create_group("eng", members=[people["eve"]["id"]])
    rules = (
        "".join(
            f"""
- id: {p.slug}-eng
  tenant: {p.slug}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {workspace.slug}, role: member }}]
"""
            for p in (acme, other)
        )
        + f"""
- id: {acme.slug}-console
  tenant: {acme.slug}
  when: {{ groups_any: [console-admins] }}
  grant: [{{ workspace: {CONSOLE_WORKSPACE}, role: admin }}]
"""
    )
    apply_policy(engine, rules, partner_ids=[acme.id, other.id])
    run_engine(engine)
    with Session(engine) as session:
        session.add(
            IdPConnection(
                id=f"{acme.slug}.okta", partner_id=acme.id, protocol="oidc", name="okta",
                issuer="https://acme.okta.example", client_id="entente-acme",
            )
        )  # fmt: skip
        task = session.exec(
            select(DeliveryTask).where(
                DeliveryTask.subject_id == people["alice"]["id"], DeliveryTask.workspace_id == workspace.id
            )
        ).one()
        task.state, task.last_error, task.attempts = TaskState.DEAD.value, "HTTP 400: refused by the app", 12
        session.add(task)
        session.commit()
        assert task.id is not None
        dead = task.id
    return Scene(acme, other, workspace, people["alice"], people["ada"], people["eve"], dead)


def _audit(engine: Engine, action: str, **where: str) -> list[AuditRecord]:
    with Session(engine) as session:
        query = select(AuditRecord).where(AuditRecord.action == action)
        for name, value in where.items():
            query = query.where(getattr(AuditRecord, name) == value)
        return list(session.exec(query.order_by(col(AuditRecord.id))).all())


def test_sign_in_is_required_and_the_password_is_checked(console_app: FastAPI, engine: Engine) -> None:
    client = browser_for(console_app)
    first = client.get("/console/workspaces")
    assert first.status_code == 303 and first.headers["location"] == "/console/login?next=/console/workspaces"
    page = client.get(first.headers["location"])
    assert page.status_code == 200
    assert '<label for="username">Username</label>' in page.text and 'autocomplete="current-password"' in page.text
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie and "Secure" not in cookie
    csrf = csrf_of(page.text)

    no_csrf = client.post("/console/login", data={"username": "admin", "password": PASSWORD})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    name = f"nobody-{uuid.uuid4().hex[:6]}"
    wrong = client.post("/console/login", data={"username": name, "password": "guess", "csrf": csrf})
    assert wrong.status_code == 401 and "Wrong username or password." in wrong.text
    assert [r.detail for r in _audit(engine, "console.login_failed", resource_id=name)] == [{"method": "password"}]

    right = client.post(
        "/console/login", data={"username": "admin", "password": PASSWORD, "csrf": csrf, "next": "/console/workspaces"}
    )
    assert right.status_code == 303 and right.headers["location"] == "/console/workspaces"
    assert client.get("/console/workspaces").status_code == 200
    with Session(engine) as session:
        from broker.console.models import ConsoleAdmin

        stored = session.get(ConsoleAdmin, "admin")
        assert (
            stored is not None and stored.password_hash.startswith("scrypt$") and PASSWORD not in stored.password_hash
        )
    signed_out = client.post("/console/logout", data={"csrf": csrf_of(client.get("/console/partners").text)})
    assert signed_out.status_code == 303
    assert client.get("/console/partners").status_code == 303
    client.close()


def test_every_page_renders_with_data_for_an_operator(operator: TestClient, scene: Scene) -> None:
    partners = operator.get("/console/partners")
    assert partners.status_code == 200, partners.text
    for text in (scene.acme.slug, scene.acme.domain, scene.other.slug, '<th scope="col">Last SCIM change</th>'):
        assert text in partners.text
    people = operator.get(f"/console/partners/{scene.acme.slug}").text
    assert scene.acme.email("alice") in people and f"/console/people/{scene.alice['id']}" in people
    idps = operator.get("/console/idps").text
    assert f"{scene.acme.slug}.okta" in idps and "https://acme.okta.example" in idps
    workspaces = operator.get("/console/workspaces").text
    assert scene.workspace.slug in workspaces and "HTTP 400: refused by the app" in workspaces
    assert f'aria-label="Retry task {scene.dead_task}"' in workspaces
    policies = operator.get("/console/policies").text
    assert f"id: {scene.acme.slug}-console" in policies and "In force" in policies
    person = operator.get(f"/console/people/{scene.alice['id']}").text
    assert f'<th scope="row">{scene.workspace.slug}</th><td>member</td>' in person
    assert "access.gain" in person and "scim.user.created" in person  # the timeline, from the audit log
    audit = operator.get("/console/audit").text
    assert "access.gain" in audit and scene.acme.slug in audit
    kill = operator.get("/console/kill").text
    assert '<label for="reason">' in kill and f'<option value="{scene.other.slug}">' in kill


def test_the_retry_button_requeues_a_dead_letter(operator: TestClient, scene: Scene, engine: Engine) -> None:
    page = operator.get("/console/workspaces")
    response = operator.post(
        f"/console/workspaces/{scene.workspace.slug}/retry",
        data={"csrf": csrf_of(page.text), "task_id": str(scene.dead_task)},
    )
    assert response.status_code == 303 and "1%20dead%20letter" in response.headers["location"]
    with Session(engine) as session:
        task = session.get(DeliveryTask, scene.dead_task)
        assert task is not None and task.state == TaskState.PENDING.value and task.attempts == 0
    [record] = [
        r for r in _audit(engine, "outbox.retried", actor_kind="console") if r.detail["task_ids"] == [scene.dead_task]
    ]
    assert record.actor_id == "admin"


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    operator: TestClient, scene: Scene, engine: Engine
) -> None:
    form = {"partner": scene.acme.slug, "person": scene.alice["id"], "reason": "x", "confirm": "yes"}
    for extra in ({}, {"csrf": "forged"}):
        refused = operator.post("/console/kill", data={**form, **extra})
        assert refused.status_code == 403 and "CSRF token" in refused.text
    refused = operator.post(f"/console/workspaces/{scene.workspace.slug}/retry", data={"task_id": str(scene.dead_task)})
    assert refused.status_code == 403
    with Session(engine) as session:
        assert live_suspensions(session, partner_id=scene.acme.id) == []
        task = session.get(DeliveryTask, scene.dead_task)
        assert task is not None and task.state == TaskState.DEAD.value


def test_kill_switch_through_the_form(operator: TestClient, scene: Scene, engine: Engine) -> None:
    page = operator.get(f"/console/people/{scene.alice['id']}")
    csrf = csrf_of(page.text)
    assert "Suspend everywhere" in page.text
    form = {
        "csrf": csrf,
        "partner": scene.acme.slug,
        "person": scene.alice["id"],
        "action": "suspend",
        "reason": "phished",
    }
    unconfirmed = operator.post("/console/kill", data=form)
    assert unconfirmed.status_code == 400 and "confirmation" in unconfirmed.text
    assert grants_of(engine, scene.alice["id"]) != {}

    done = operator.post("/console/kill", data={**form, "confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"].startswith(f"/console/people/{scene.alice['id']}")
    assert grants_of(engine, scene.alice["id"]) == {}
    [record] = _audit(engine, "kill_switch.engaged", resource_id=scene.alice["id"])
    assert (record.actor_kind, record.actor_id, record.detail["reason"]) == ("console", "admin", "phished")
    page = operator.get(done.headers["location"]).text
    assert "suspended by the kill switch" in page and "Lift suspension" in page and "No access anywhere." in page
    assert "revoke_sessions" in page  # the deliveries in flight
    kill = operator.get("/console/kill").text
    assert scene.acme.email("alice") in kill and "phished" in kill

    lifted = operator.post("/console/kill", data={**form, "action": "lift", "reason": "reset", "confirm": "yes"})
    assert lifted.status_code == 303
    assert set(grants_of(engine, scene.alice["id"])) == {scene.workspace.id}
    # The whole partner, from the kill page (operators only).
    whole = operator.post(
        "/console/kill",
        data={"csrf": csrf, "partner": scene.other.slug, "person": "", "reason": "contract", "confirm": "yes"},
    )
    assert whole.status_code == 303 and grants_of(engine, scene.eve["id"]) == {}
    assert set(grants_of(engine, scene.alice["id"])) == {scene.workspace.id}


def _oidc_sign_in(app: FastAPI, engine: Engine, partner: PartnerHandle, subject_id: str) -> TestClient:
    """A partner person with a live Entente login session (as federation makes it) signs in to the console."""
    client = browser_for(app)
    with Session(engine, expire_on_commit=False) as session:
        identity = FederatedIdentity(
            tenant_id=partner.id, issuer="https://idp.example", subject=f"up-{subject_id}", email=None,
            email_verified=False, session_ref=None,
        )  # fmt: skip
        started = start_session(session, identity=identity, subject_id=subject_id, lifetime=dt.timedelta(hours=1))
        session.commit()
    client.cookies.set(COOKIE_NAME, started.cookie_value)
    start = client.get("/console/login/oidc", params={"next": "/console/kill"})
    assert start.status_code == 303 and start.headers["location"].startswith("/oidc/authorize?")
    authorized = client.get(start.headers["location"])
    assert authorized.status_code == 302, authorized.text
    target = urlsplit(authorized.headers["location"])
    assert target.path == "/console/callback", authorized.headers["location"]
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert "code" in query, query
    callback = client.get(f"/console/callback?{target.query}")
    assert callback.status_code == 303, callback.text
    assert callback.headers["location"] == "/console/kill"
    return client


def test_partner_admin_signs_in_through_entente_and_sees_only_their_partner(
    console_app: FastAPI, scene: Scene, engine: Engine
) -> None:
    ada = _oidc_sign_in(console_app, engine, scene.acme, scene.ada["id"])
    partners = ada.get("/console/partners").text
    assert scene.acme.slug in partners and scene.other.slug not in partners
    assert f"admin of {scene.acme.slug}" in partners
    assert ada.get(f"/console/people/{scene.alice['id']}").status_code == 200
    foreign = ada.get(f"/console/people/{scene.eve['id']}")
    assert foreign.status_code == 404 and "no such person" in foreign.text
    assert ada.get(f"/console/partners/{scene.other.slug}").status_code == 404
    assert ada.get("/console/workspaces").status_code == 403
    assert ada.get("/console/policies").status_code == 403
    assert scene.other.slug not in ada.get("/console/audit").text
    idps = ada.get("/console/idps").text
    assert f"{scene.acme.slug}.okta" in idps

    csrf = csrf_of(ada.get("/console/kill").text)
    whole = ada.post("/console/kill", data={"csrf": csrf, "partner": scene.acme.slug, "reason": "x", "confirm": "yes"})
    assert whole.status_code == 403
    other = ada.post(
        "/console/kill",
        data={"csrf": csrf, "partner": scene.other.slug, "person": scene.eve["id"], "reason": "x", "confirm": "yes"},
    )
    assert other.status_code == 404 and grants_of(engine, scene.eve["id"]) != {}
    own = ada.post(
        "/console/kill",
        data={
            "csrf": csrf,
            "partner": scene.acme.slug,
            "person": scene.alice["id"],
            "reason": "left",
            "confirm": "yes",
        },
    )
    assert own.status_code == 303 and grants_of(engine, scene.alice["id"]) == {}
    [record] = _audit(engine, "kill_switch.engaged", resource_id=scene.alice["id"])
    assert record.actor_id == f"{scene.acme.slug}/{scene.acme.email('ada')}"
    assert [r.detail["role"] for r in _audit(engine, "console.login_succeeded", resource_id=scene.ada["id"])] == [
        "partner_admin"
    ]

    # The kill switch on the admin herself signs her out of the console on the next click.
    with Session(engine) as session:
        suspend_person(session, partner_slug=scene.acme.slug, person=scene.ada["id"], reason="x", actor=OPERATOR)
        assert session.exec(select(AccessGrant).where(AccessGrant.subject_id == scene.ada["id"])).all() == []
    gone = ada.get("/console/partners")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/console/login")
    ada.close()


def test_a_person_without_the_console_grant_is_refused_by_the_provider(
    console_app: FastAPI, scene: Scene, engine: Engine
) -> None:
    client = browser_for(console_app)
    with Session(engine, expire_on_commit=False) as session:
        identity = FederatedIdentity(
            tenant_id=scene.acme.id, issuer="https://idp.example", subject="up-alice", email=None,
            email_verified=False, session_ref=None,
        )  # fmt: skip
        started = start_session(
            session, identity=identity, subject_id=scene.alice["id"], lifetime=dt.timedelta(hours=1)
        )
        session.commit()
    client.cookies.set(COOKIE_NAME, started.cookie_value)
    start = client.get("/console/login/oidc")
    denied = client.get(start.headers["location"])
    target = urlsplit(denied.headers["location"])
    assert target.path == "/console/callback" and parse_qs(target.query)["error"] == ["access_denied"]
    back = client.get(f"/console/callback?{target.query}")
    assert back.status_code == 303 and "did%20not%20sign%20you%20in" in back.headers["location"].replace("+", "%20")
    assert client.get("/console/partners").status_code == 303
    forged = client.get("/console/callback", params={"code": "x", "state": "not-mine"})
    assert forged.status_code == 400 and "state mismatch" in forged.text
    client.close()
