"""Reconciliation: what a workspace really has (``list_accounts``) against what the grants say it should.

Drift is reported, and on request repaired through the same outbox as every other change (so repairs
are ordered, retried, receipted and audited like any delivery):

    orphaned    an account of ours (its subject id is known) with sign-in enabled but no grant
                -> revoke_sessions + the workspace's on-leave action
    missing     a grant whose account is absent or disabled in the workspace -> update (re-provision)
    unmanaged   an account Entente never made (no subject id it can map): reported, never touched

People with tasks still queued for the workspace are skipped: their drift is being repaired already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import update
from sqlmodel import Session, select

from broker.lifecycle.engine import reconcile_subjects, revocation_actions
from broker.lifecycle.grants import AccessGrant, WorkspaceAccount
from broker.lifecycle.outbox import DeliveryTask, NewTask, enqueue
from broker.policy.store import active_policies
from broker.scim.models import ScimUser
from broker.types import utcnow
from broker.workspaces.models import Workspace
from connectors.base import Connector, RemoteAccount

__all__ = ["Drift", "find_drift", "repair_drift"]

_GRANTS = AccessGrant.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Drift:
    """One difference between a workspace and Entente's grants."""

    kind: Literal["orphaned", "missing", "unmanaged"]
    workspace: str
    subject_id: str | None
    partner_id: str | None
    remote_id: str | None
    user_name: str | None


async def _remote_accounts(connector: Connector) -> list[RemoteAccount]:
    return [account async for account in connector.list_accounts()]


async def find_drift(session: Session, *, workspace: Workspace, connector: Connector) -> list[Drift]:
    """Compare the workspace's accounts with the grants; reads only (the listing may take a while)."""
    remote = await _remote_accounts(connector)
    grants = {
        g.subject_id: g.partner_id
        for g in session.exec(select(AccessGrant).where(AccessGrant.workspace_id == workspace.id)).all()
    }
    known = session.exec(select(WorkspaceAccount).where(WorkspaceAccount.workspace_id == workspace.id)).all()
    by_remote_id = {a.remote_id: a for a in known if a.remote_id}
    busy = set(session.exec(select(DeliveryTask.subject_id).where(DeliveryTask.workspace_id == workspace.id)).all())
    drift: list[Drift] = []
    present: set[str] = set()
    for account in remote:
        ours = by_remote_id.get(account.remote_id)
        subject_id = account.subject_id or (ours.subject_id if ours else None)
        if subject_id is None:
            drift.append(Drift("unmanaged", workspace.slug, None, None, account.remote_id, account.user_name))
            continue
        if account.active:
            present.add(subject_id)
        if subject_id in grants or subject_id in busy or not account.active:
            continue
        partner_id = ours.partner_id if ours else _partner_of(session, subject_id)
        drift.append(Drift("orphaned", workspace.slug, subject_id, partner_id, account.remote_id, account.user_name))
    for subject_id, partner_id in sorted(grants.items()):
        if subject_id not in present and subject_id not in busy:
            drift.append(Drift("missing", workspace.slug, subject_id, partner_id, None, None))
    return drift


def _partner_of(session: Session, subject_id: str) -> str | None:
    """The partner of a person Entente knows (user ids are unique across partners), else ``None``."""
    return session.exec(select(ScimUser.partner_id).where(ScimUser.id == subject_id)).first()


def repair_drift(session: Session, *, workspace: Workspace, drift: list[Drift]) -> int:
    """Enqueue the repairs in the caller's transaction; returns how many people they cover."""
    now = utcnow()
    tasks: list[NewTask] = []
    missing: dict[str, list[str]] = {}  # partner id -> subject ids
    for item in drift:
        if item.subject_id is None or item.partner_id is None:
            continue
        if item.kind == "orphaned":
            for action in revocation_actions(workspace):
                tasks.append(NewTask(workspace.id, item.partner_id, item.subject_id, action, "reconcile", now))
        elif item.kind == "missing":
            missing.setdefault(item.partner_id, []).append(item.subject_id)
    enqueue(session, tasks)
    if missing:
        policies = active_policies(session)
        workspaces = list(session.exec(select(Workspace)).all())
        for partner_id, subject_ids in missing.items():
            # Forget the digest of the spec last sent, so re-deciding these people re-sends it in full.
            session.execute(
                update(_GRANTS)
                .where(_GRANTS.c.workspace_id == workspace.id, _GRANTS.c.subject_id.in_(subject_ids))
                .values(spec_sha256="")
            )
            reconcile_subjects(
                session,
                partner_id=partner_id,
                causes={subject_id: ("reconcile", now) for subject_id in subject_ids},
                policies=policies,
                workspaces=workspaces,
                now=now,
            )
    return len({t.subject_id for t in tasks}) + sum(len(ids) for ids in missing.values())
