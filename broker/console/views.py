"""What each console page shows, read in a few queries and scoped to what the admin may see.

Keyword-only readers with the session and the admin explicit, so every page's scope is visible in
its signature. A foreign partner's person answers ``NotFound`` exactly like a missing one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, col, select

from broker.audit.checkpoints import AuditCheckpoint
from broker.audit.log import AuditRecord
from broker.console.auth import Admin
from broker.errors import NotFound
from broker.federation.models import IdPConnection
from broker.lifecycle.events import LifecycleEvent
from broker.lifecycle.grants import AccessGrant, WorkspaceAccount
from broker.lifecycle.outbox import DeliveryTask, QueueStats, TaskState, queue_stats
from broker.lifecycle.suspensions import Suspension, live_suspensions
from broker.policy.store import PolicyVersion
from broker.scim.models import ScimUser
from broker.tenants.models import Partner, PartnerDomain, ScimToken
from broker.workspaces.models import Workspace

__all__ = [
    "PartnerView",
    "PersonView",
    "WorkspaceView",
    "audit_page",
    "idp_connections",
    "partner_people",
    "partners",
    "person",
    "policy_versions",
    "workspaces",
]


@dataclass(frozen=True)
class PartnerView:
    partner: Partner
    domains: list[str]
    tokens: list[ScimToken]
    people: int
    last_change: dt.datetime | None
    """When the partner's SCIM feed last changed someone (its newest lifecycle event): feed health."""
    suspended: Suspension | None


def _visible_partners(session: Session, admin: Admin) -> list[Partner]:
    query = select(Partner).order_by(col(Partner.slug))
    if not admin.is_operator:
        query = query.where(Partner.id == admin.partner_id)
    return list(session.exec(query).all())


def partners(session: Session, *, admin: Admin) -> list[PartnerView]:
    """Every partner the admin may see, with domains, token metadata (never secrets) and feed health."""
    rows = _visible_partners(session, admin)
    ids = [p.id for p in rows]
    domains: dict[str, list[str]] = {i: [] for i in ids}
    for partner_id, domain in session.exec(
        select(PartnerDomain.partner_id, PartnerDomain.domain).where(col(PartnerDomain.partner_id).in_(ids))
    ).all():
        domains[partner_id].append(domain)
    tokens: dict[str, list[ScimToken]] = {i: [] for i in ids}
    for token in session.exec(
        select(ScimToken).where(col(ScimToken.partner_id).in_(ids)).order_by(col(ScimToken.created_at))
    ).all():
        tokens[token.partner_id].append(token)
    people = dict(
        session.exec(
            select(ScimUser.partner_id, func.count())
            .where(col(ScimUser.partner_id).in_(ids))
            .group_by(ScimUser.partner_id)
        ).all()
    )
    changed = dict(
        session.exec(
            select(LifecycleEvent.partner_id, func.max(LifecycleEvent.occurred_at))
            .where(col(LifecycleEvent.partner_id).in_(ids))
            .group_by(LifecycleEvent.partner_id)
        ).all()
    )
    whole = {s.partner_id: s for s in live_suspensions(session) if s.subject_id is None}
    return [
        PartnerView(
            p, sorted(domains[p.id]), tokens[p.id], int(people.get(p.id, 0)), changed.get(p.id), whole.get(p.id)
        )
        for p in rows
    ]


def partner_people(session: Session, *, admin: Admin, slug: str) -> tuple[Partner, list[ScimUser], set[str]]:
    """A visible partner, its people by userName (first 500), and which of them are suspended."""
    partner = session.exec(select(Partner).where(Partner.slug == slug)).first()
    if partner is None or not admin.sees_partner(partner.id):
        raise NotFound(f"no partner {slug!r}")
    people = list(
        session.exec(
            select(ScimUser).where(ScimUser.partner_id == partner.id).order_by(col(ScimUser.user_name_ci)).limit(500)
        ).all()
    )
    live = live_suspensions(session, partner_id=partner.id)
    suspended = {p.id for p in people} if any(s.subject_id is None for s in live) else {s.subject_id for s in live}
    return partner, people, {s for s in suspended if s}


def idp_connections(session: Session, *, admin: Admin) -> list[tuple[IdPConnection, str]]:
    """(connection, partner slug) the admin may see; never a secret."""
    query = (
        select(IdPConnection, Partner.slug)
        .join(Partner, col(Partner.id) == col(IdPConnection.partner_id))
        .order_by(col(IdPConnection.id))
    )
    if not admin.is_operator:
        query = query.where(IdPConnection.partner_id == admin.partner_id)
    return [(c, s) for c, s in session.exec(query).all()]


@dataclass(frozen=True)
class WorkspaceView:
    workspace: Workspace
    stats: QueueStats
    dead: list[DeliveryTask] = field(default_factory=list)
    """The oldest dead letters (at most 20), each retryable from the page."""


def workspaces(session: Session, *, admin: Admin) -> list[WorkspaceView]:
    """Every workspace with its queue depth and dead letters (operators only)."""
    admin.require_operator()
    views = []
    for workspace in session.exec(select(Workspace).order_by(col(Workspace.slug))).all():
        dead = session.exec(
            select(DeliveryTask)
            .where(DeliveryTask.workspace_id == workspace.id, DeliveryTask.state == TaskState.DEAD.value)
            .order_by(col(DeliveryTask.id))
            .limit(20)
        ).all()
        views.append(WorkspaceView(workspace, queue_stats(session, workspace_id=workspace.id), list(dead)))
    return views


def policy_versions(session: Session, *, admin: Admin, limit: int = 10) -> list[PolicyVersion]:
    """The applied policy sets, newest (in force) first (operators only)."""
    admin.require_operator()
    return list(session.exec(select(PolicyVersion).order_by(col(PolicyVersion.id).desc()).limit(limit)).all())


@dataclass(frozen=True)
class PersonView:
    partner: Partner
    user: ScimUser
    grants: list[tuple[AccessGrant, str]]
    """Each grant with its workspace's slug: the person's access in every workspace."""
    accounts: list[tuple[WorkspaceAccount, str]]
    pending: list[tuple[DeliveryTask, str]]
    suspensions: list[Suspension]
    """Live suspensions covering the person (their own, or their partner's)."""
    timeline: list[AuditRecord]


def person(session: Session, *, admin: Admin, subject_id: str) -> PersonView:
    """One person's access, deliveries in flight, suspensions and audit timeline (newest first, 200 records)."""
    user = session.exec(select(ScimUser).where(ScimUser.id == subject_id)).first()
    if user is None or not admin.sees_partner(user.partner_id):
        raise NotFound("no such person")
    partner = session.get(Partner, user.partner_id)
    assert partner is not None
    slugs = dict(session.exec(select(Workspace.id, Workspace.slug)).all())
    grants = session.exec(
        select(AccessGrant).where(AccessGrant.partner_id == user.partner_id, AccessGrant.subject_id == user.id)
    ).all()
    accounts = session.exec(
        select(WorkspaceAccount).where(
            WorkspaceAccount.partner_id == user.partner_id, WorkspaceAccount.subject_id == user.id
        )
    ).all()
    pending = session.exec(
        select(DeliveryTask)
        .where(DeliveryTask.partner_id == user.partner_id, DeliveryTask.subject_id == user.id)
        .order_by(col(DeliveryTask.id))
    ).all()
    suspensions = [s for s in live_suspensions(session, partner_id=user.partner_id) if s.subject_id in (None, user.id)]
    timeline = session.exec(
        select(AuditRecord)
        .where(AuditRecord.partner_id == user.partner_id, AuditRecord.resource_id == user.id)
        .order_by(col(AuditRecord.id).desc())
        .limit(200)
    ).all()
    return PersonView(
        partner=partner,
        user=user,
        grants=sorted(((g, slugs.get(g.workspace_id, "?")) for g in grants), key=lambda pair: pair[1]),
        accounts=sorted(((a, slugs.get(a.workspace_id, "?")) for a in accounts), key=lambda pair: pair[1]),
        pending=[(t, slugs.get(t.workspace_id, "?")) for t in pending],
        suspensions=suspensions,
        timeline=list(timeline),
    )


def audit_page(
    session: Session, *, admin: Admin, limit: int = 100
) -> tuple[list[AuditRecord], AuditCheckpoint | None, dict[str, str]]:
    """Recent records (a partner admin: their partner's only), the latest signed checkpoint, partner slugs."""
    query = select(AuditRecord).order_by(col(AuditRecord.id).desc()).limit(limit)
    if not admin.is_operator:
        query = query.where(AuditRecord.partner_id == admin.partner_id)
    records = list(session.exec(query).all())
    checkpoint = session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.tree_size).desc()).limit(1)).first()
    slugs = dict(session.exec(select(Partner.id, Partner.slug)).all())
    return records, checkpoint, slugs
