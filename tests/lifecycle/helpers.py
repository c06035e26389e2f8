"""Shared helpers for engine and worker tests: workspaces, policy text, and reading the outbox."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.audit.log import Actor
from broker.lifecycle.engine import process_events, reconcile_partner
from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.outbox import DeliveryTask
from broker.policy.store import save_policies
from broker.settings import Settings
from broker.workspaces.models import OnLeave, Workspace
from broker.workspaces.service import add_workspace

OPERATOR = Actor(kind="cli", id="test")


def new_workspace(
    engine: Engine,
    settings: Settings,
    *,
    connector: str = "scim",
    values: dict[str, str] | None = None,
    on_leave: OnLeave = OnLeave.DEPROVISION,
    role_groups: dict[str, list[str]] | None = None,
    rate: float = 1000.0,
) -> Workspace:
    """A workspace with a unique slug; by default a SCIM one pointing at an address nobody serves."""
    with Session(engine, expire_on_commit=False) as session:
        return add_workspace(
            session,
            settings=settings,
            slug=f"ws-{uuid.uuid4().hex[:10]}",
            name=None,
            connector=connector,
            values=values or {"base_url": "http://127.0.0.1:9/scim/v2", "token": "t"},
            role_groups=role_groups,
            on_leave=on_leave,
            rate_per_second=rate,
            actor=OPERATOR,
        )


def apply_policy(engine: Engine, text: str, *, partner_ids: list[str]) -> None:
    """Put one policy document in force and re-decide the given partners' people (as `policy apply`)."""
    with Session(engine, expire_on_commit=False) as session:
        policies = save_policies(session, documents=[("test.yaml", text)], actor=OPERATOR)
        for partner_id in partner_ids:
            reconcile_partner(session, partner_id=partner_id, policies=policies, cause="policy")
        session.commit()


def run_engine(engine: Engine) -> int:
    with Session(engine, expire_on_commit=False) as session:
        total = 0
        while (n := process_events(session)) > 0:
            total += n
        return total


def tasks_of(engine: Engine, subject_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(workspace id, action, spec) of a person's queued tasks, in delivery order."""
    with Session(engine) as session:
        rows = session.exec(
            select(DeliveryTask).where(DeliveryTask.subject_id == subject_id).order_by(col(DeliveryTask.id))
        ).all()
        return [(t.workspace_id, t.action, t.spec) for t in rows]


def grants_of(engine: Engine, subject_id: str) -> dict[str, tuple[str, str]]:
    """workspace id -> (role, rule id) of a person's current grants."""
    with Session(engine) as session:
        rows = session.exec(select(AccessGrant).where(AccessGrant.subject_id == subject_id)).all()
        return {g.workspace_id: (g.role, g.rule_id) for g in rows}
