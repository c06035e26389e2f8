"""The admin console over HTTP (issue 6): sign-in, every page with data, roles, CSRF, the kill switch form."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.audit.checkpoints import checkpoint_at, make_checkpoint
from broker.audit.log import AuditRecord, append_audit
from broker.audit.tree import AuditLeaf
from broker.console.oidc import CONSOLE_WORKSPACE, ensure_console_client
from broker.federation.base import FederatedIdentity
from broker.federation.models import IdPConnection
from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.killswitch import suspend_person
from broker.lifecycle.outbox import DeliveryTask, TaskState
from broker.lifecycle.suspensions import live_suspensions
from broker.policy.store import PolicyVersion
from broker.reports.rows import COLUMNS
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


# --- reports, proof checks, policy dry runs ------------------------------------------------------

_CELL = re.compile(r"<t[hd][^>]*>(.*?)</t[hd]>", re.S)
_TAG = re.compile(r"<[^>]+>")


def _table(page: str, caption: str) -> list[list[str]]:
    """The body rows (cell texts, tags stripped) of the table whose caption starts with ``caption``."""
    start = page.index(f"<caption>{caption}")
    body = page[page.index("<tbody>", start) : page.index("</tbody>", start)]
    return [[html.unescape(_TAG.sub("", cell)).strip() for cell in _CELL.findall(row)] for row in body.split("<tr")[1:]]


def _leaf_of(engine: Engine, action: str, resource_id: str) -> int:
    with Session(engine) as session:
        found = session.exec(
            select(AuditLeaf.leaf_index)
            .join(AuditRecord, col(AuditRecord.id) == col(AuditLeaf.record_id))
            .where(AuditRecord.action == action, AuditRecord.resource_id == resource_id)
        ).first()
        assert found is not None, (action, resource_id)
        return found


def _checkpoint(engine: Engine, settings: Settings) -> int:
    """Sequence every record and sign a checkpoint now (as the scheduled checkpointer does); its tree size."""
    with Session(engine, expire_on_commit=False) as session:
        made = make_checkpoint(session, settings, force=True, wait=True)
        assert made is not None
        return made.tree_size


def test_the_reports_page_counts_charts_and_lists_the_stale_access_report(
    operator: TestClient, scene: Scene, engine: Engine
) -> None:
    with Session(engine) as session:  # eve's revocations stay pending: no worker runs here
        suspend_person(session, partner_slug=scene.other.slug, person=scene.eve["id"], reason="x", actor=OPERATOR)
    page = operator.get("/console/reports", params={"partner": scene.acme.slug, "inactive_days": "0"})
    assert page.status_code == 200, page.text
    text = page.text
    assert '<svg role="img" aria-labelledby="chart-title chart-desc"' in text
    assert '<title id="chart-title">Stale-access findings per section</title>' in text
    counts = {row[0]: int(row[1]) for row in _table(text, "Findings per section")}
    # alice and ada: active, no login within 0 days; acme's SCIM token expires within the hour
    assert counts == {
        "Orphaned accounts": 0, "Inactive people": 2, "Expired grants still in force": 0, "Pending revocations": 0,
        "Silent SCIM feeds": 0, "SCIM tokens needing attention": 1,
    }  # fmt: skip
    assert ("Inactive people: 2; " in text) and ("SCIM tokens needing attention: 1. Total 3." in text)  # <desc>
    inactive = _rows_of(text, "inactive_people")
    assert {row[2] for row in inactive} == {scene.acme.email("alice"), scene.acme.email("ada")}
    assert {row[0] for row in inactive} == {scene.acme.slug} and {row[4] for row in inactive} == {"never_logged_in"}
    assert f'href="/console/people/{scene.alice["id"]}"' in text
    assert scene.other.slug not in text.split("</form>", 2)[-1]  # in the picker, never in the report
    assert f"/console/reports/stale.csv?partner={scene.acme.slug}&amp;inactive_days=0" in text

    csv_file = operator.get("/console/reports/stale.csv", params={"partner": scene.acme.slug, "inactive_days": "0"})
    assert csv_file.status_code == 200 and csv_file.headers["content-type"].startswith("text/csv")
    lines = csv_file.text.splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 4
    assert all(line.split(",")[1] == scene.acme.slug for line in lines[1:])

    other = operator.get("/console/reports", params={"partner": scene.other.slug}).text  # default thresholds
    revocations = _rows_of(other, "pending_revocations")
    assert revocations and {(r[0], r[1], r[2], r[4]) for r in revocations} == {
        (scene.other.slug, scene.workspace.slug, scene.other.email("eve"), "pending")
    }, revocations
    assert operator.get("/console/reports").status_code == 200  # every partner
    jsonl = operator.get("/console/reports/stale.jsonl", params={"partner": scene.other.slug})
    sections = [json.loads(line) for line in jsonl.text.splitlines()]
    assert {"pending_revocations", "scim_tokens"} <= {s["section"] for s in sections}
    assert {s["partner"] for s in sections} == {scene.other.slug}

    assert operator.get("/console/reports", params={"inactive_days": "soon"}).status_code == 400
    assert operator.get("/console/reports", params={"partner": "no-such-partner"}).status_code == 404
    assert operator.get("/console/reports/stale.xml").status_code == 404


def _rows_of(page: str, section: str) -> list[list[str]]:
    """The rows shown for one report section (the table after its heading), or [] when it found nothing."""
    part = page[page.index(f'<h2 id="{section}">') :]
    part = part[: part.index("<h2", 4)] if "<h2" in part[4:] else part
    return _table(part, "") if "<table>" in part else []


def test_the_audit_page_verifies_a_records_inclusion_proof(
    operator: TestClient, scene: Scene, engine: Engine, console_settings: Settings
) -> None:
    size = _checkpoint(engine, console_settings)
    leaf = _leaf_of(engine, "scim.user.created", scene.alice["id"])
    audit = operator.get("/console/audit")
    assert f'href="/console/audit?leaf={leaf}#proof"' in audit.text
    page = operator.get("/console/audit", params={"leaf": str(leaf)})
    assert page.status_code == 200, page.text
    with Session(engine) as session:
        checkpoint = checkpoint_at(session, size)
    root = html.escape(base64.b64encode(checkpoint.root_hash).decode())
    verified = (
        f'<strong class="ok">Verified</strong> against checkpoint {size}\n    (tree size {size}, '
        f"root <code>{root}</code>, signature key id <code>{checkpoint.key_id}</code>)"
    )
    assert verified in page.text, page.text
    assert "scim.user.created" in page.text and "Audit path (" in page.text

    # A record sequenced after the latest checkpoint: the check says precisely why it cannot verify yet.
    with Session(engine) as session:
        append_audit(session, actor=OPERATOR, action="console.test", partner_id=None, resource_id=scene.alice["id"])
        session.commit()
    patient = console_settings.model_copy(
        update={"audit_checkpoint_interval_seconds": 3600, "audit_checkpoint_max_records": 10**6}
    )
    with Session(engine) as session:
        assert make_checkpoint(session, patient, wait=True) is None  # sequenced, not signed
    later = _leaf_of(engine, "console.test", scene.alice["id"])
    waiting = operator.get("/console/audit", params={"leaf": str(later)}).text
    assert '<strong class="bad">Not verified</strong>' in waiting
    assert f"leaf {later} is not covered by a signed checkpoint yet" in waiting
    _checkpoint(engine, console_settings)
    assert '<strong class="ok">Verified</strong>' in operator.get("/console/audit", params={"leaf": later}).text

    assert operator.get("/console/audit", params={"leaf": "10000000"}).status_code == 404
    assert operator.get("/console/audit", params={"leaf": "x"}).status_code == 400


def test_the_policy_dry_run_shows_who_would_gain_and_lose_and_applies_nothing(
    operator: TestClient, scene: Scene, engine: Engine
) -> None:
    bob = scene.acme.create_user("bob")
    scene.acme.create_group("ops", members=[bob["id"]])
    ws = scene.workspace.slug
    # acme's rules as in force, plus ops; other's eng rule dropped
    text = f"""
- id: {scene.acme.slug}-eng
  tenant: {scene.acme.slug}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {ws}, role: member }}]
- id: {scene.acme.slug}-console
  tenant: {scene.acme.slug}
  when: {{ groups_any: [console-admins] }}
  grant: [{{ workspace: {CONSOLE_WORKSPACE}, role: admin }}]
- id: {scene.acme.slug}-ops
  tenant: {scene.acme.slug}
  when: {{ groups_any: [ops] }}
  grant: [{{ workspace: {ws}, role: member }}]
"""

    def state() -> tuple[int, int, int]:
        with Session(engine) as session:
            versions = len(session.exec(select(PolicyVersion.id)).all())
            applied = len(session.exec(select(AuditRecord.id).where(AuditRecord.action == "policy.applied")).all())
            tasks = len(session.exec(select(DeliveryTask.id)).all())
            return versions, applied, tasks

    before = state()
    page = operator.get("/console/policies")
    assert 'action="/console/policies/dry-run#dry-run"' in page.text and f"id: {scene.acme.slug}-console" in page.text
    form = {"name": "console.yaml", "text": text}
    for forged in ({}, {"csrf": "forged"}):
        refused = operator.post("/console/policies/dry-run", data={**form, **forged})
        assert refused.status_code == 403 and "CSRF token" in refused.text
    done = operator.post("/console/policies/dry-run", data={**form, "csrf": csrf_of(page.text)})
    assert done.status_code == 200, done.text
    assert "Nothing was applied." in done.text
    changes = [r for r in _table(done.text, "Who would gain") if r[0] in ("gain", "lose", "change", "refresh")]
    mine = {(r[0], r[1], r[2], r[3], r[4], r[5], r[7]) for r in changes if r[1] in (scene.acme.slug, scene.other.slug)}
    assert mine == {
        ("gain", scene.acme.slug, ws, scene.acme.email("bob"), "", "member", f"{scene.acme.slug}-ops"),
        ("lose", scene.other.slug, ws, scene.other.email("eve"), "member", "", f"{scene.other.slug}-eng"),
    }, mine
    assert state() == before  # no version stored, nothing audited, nothing queued
    assert _slugs(engine, grants_of(engine, scene.eve["id"])) == [ws]
    assert grants_of(engine, bob["id"]) == {}

    # Only this document replaced (named as the one in force is kept): bob gains, eve keeps her access.
    extra = text.split(f"- id: {scene.acme.slug}-ops")[1]
    kept = operator.post(
        "/console/policies/dry-run",
        data={"csrf": csrf_of(page.text), "name": "ops.yaml", "keep_others": "yes",
              "text": f"- id: {scene.acme.slug}-ops{extra}"},
    )  # fmt: skip
    assert kept.status_code == 200, kept.text
    rows = _table(kept.text, "Who would gain")
    assert [r[0] for r in rows if r[3] in (scene.acme.email("bob"), scene.other.email("eve"))] == ["gain"]
    assert "Dry run of test.yaml, ops.yaml" in kept.text

    invalid = operator.post(
        "/console/policies/dry-run",
        data={"csrf": csrf_of(page.text), "name": "bad.yaml",
              "text": f"- id: broken\n  tenant: {scene.acme.slug}\n  when: {{ groups_any: [eng] }}\n  colour: red\n"
                      f"  grant: [{{ workspace: {ws}, role: member }}]\n"},
    )  # fmt: skip
    assert invalid.status_code == 400
    problems = _table(invalid.text, "Validation errors")
    assert ["bad.yaml", "broken", "colour"] in [p[:3] for p in problems], problems
    assert "unknown key (typo?)" in invalid.text and "colour: red" in invalid.text  # the text is kept to fix
    assert state() == before


def _slugs(engine: Engine, grants: dict[str, tuple[str, str]]) -> list[str]:
    with Session(engine) as session:
        return [w.slug for w in session.exec(select(Workspace).where(col(Workspace.id).in_(list(grants)))).all()]


def test_a_partner_admin_sees_only_their_partners_report_and_proofs(
    console_app: FastAPI, scene: Scene, engine: Engine, console_settings: Settings
) -> None:
    with Session(engine) as session:
        suspend_person(session, partner_slug=scene.other.slug, person=scene.eve["id"], reason="x", actor=OPERATOR)
    _checkpoint(engine, console_settings)
    ada = _oidc_sign_in(console_app, engine, scene.acme, scene.ada["id"])
    page = ada.get("/console/reports", params={"inactive_days": "0", "silent_days": "0"})
    assert page.status_code == 200, page.text
    assert scene.acme.slug in page.text and scene.other.slug not in page.text
    assert scene.other.email("eve") not in page.text and 'option value="">All partners' not in page.text
    assert '<a href="/console/reports" aria-current="page">Reports</a>' in page.text
    assert ada.get("/console/reports", params={"partner": scene.other.slug}).status_code == 404
    download = ada.get("/console/reports/stale.jsonl", params={"inactive_days": "0", "silent_days": "0"})
    rows = [json.loads(line) for line in download.text.splitlines()]
    assert rows and {r["partner"] for r in rows} == {scene.acme.slug}
    assert ada.get("/console/reports/stale.csv", params={"partner": scene.other.slug}).status_code == 404

    own = _leaf_of(engine, "scim.user.created", scene.alice["id"])
    assert '<strong class="ok">Verified</strong>' in ada.get("/console/audit", params={"leaf": own}).text
    foreign = ada.get("/console/audit", params={"leaf": _leaf_of(engine, "scim.user.created", scene.eve["id"])})
    assert foreign.status_code == 404 and "no audit record of your partner" in foreign.text
    csrf = csrf_of(ada.get("/console/kill").text)
    assert ada.post("/console/policies/dry-run", data={"csrf": csrf, "text": "rules: []"}).status_code == 403
    ada.close()
