"""Section 1, orphaned accounts: what the latest reconciliation of each workspace found, still unresolved.

``record_orphans`` is called by `entente workspace reconcile` with ``find_drift``'s answer: it
replaces the workspace's recorded orphans, keeping when each was first found. The report then shows
those that are still orphans: no grant has since been given for the account, and no suspension or
removal of it has been receipted after the reconciliation that last saw it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence

from sqlalchemy import and_, delete, exists, insert, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.outbox import DeliveryReceipt, TaskAction
from broker.lifecycle.reconcile import Drift
from broker.reports.models import ReconcileOrphan
from broker.reports.rows import OrphanedAccount, days_between, person_state
from broker.reports.scope import PartnerRef, ReportOptions, WorkspaceRef
from broker.reports.snapshot import stream
from broker.scim.models import ScimUser
from broker.types import utcnow
from broker.workspaces.models import Workspace

__all__ = ["orphaned_accounts", "record_orphans"]

_ORPHANS = ReconcileOrphan.__table__  # type: ignore[attr-defined]
_GRANTS = AccessGrant.__table__  # type: ignore[attr-defined]
_RECEIPTS = DeliveryReceipt.__table__  # type: ignore[attr-defined]
_USERS = ScimUser.__table__  # type: ignore[attr-defined]
_REMOVALS = [TaskAction.SUSPEND.value, TaskAction.DEPROVISION.value]


def record_orphans(
    session: Session, *, workspace: Workspace, drift: Sequence[Drift], now: dt.datetime | None = None
) -> int:
    """Make the workspace's recorded orphans those of ``drift`` (one reconciliation); returns how many.

    An orphan found again keeps its first sighting. Orphans whose partner is unknown (the person
    is unknown to Entente) are not kept: the report is per partner. Writes in the caller's transaction.
    """
    now = now or utcnow()
    found = {
        (d.subject_id, d.remote_id): d
        for d in drift
        if d.kind == "orphaned" and d.subject_id is not None and d.partner_id is not None
    }
    first_seen = {
        (row.subject_id, row.remote_id): row.first_found_at
        for row in session.execute(
            select(_ORPHANS.c.subject_id, _ORPHANS.c.remote_id, _ORPHANS.c.first_found_at).where(
                _ORPHANS.c.workspace_id == workspace.id
            )
        )
    }
    session.execute(delete(_ORPHANS).where(_ORPHANS.c.workspace_id == workspace.id))
    if found:
        session.execute(
            insert(_ORPHANS),
            [
                {
                    "workspace_id": workspace.id,
                    "partner_id": d.partner_id,
                    "subject_id": d.subject_id,
                    "remote_id": d.remote_id,
                    "user_name": d.user_name,
                    "first_found_at": first_seen.get(key, now),
                    "last_seen_at": now,
                }
                for key, d in found.items()
            ],
        )
    return len(found)


def orphaned_accounts(
    connection: Connection,
    *,
    partner: PartnerRef,
    workspace: WorkspaceRef | None,
    slugs: Mapping[str, str],
    options: ReportOptions,
) -> Iterator[OrphanedAccount]:
    """The partner's unresolved orphans (in one workspace, if given), by workspace then first sighting."""
    o, g, r, u = _ORPHANS, _GRANTS, _RECEIPTS, _USERS
    granted = exists().where(
        g.c.partner_id == o.c.partner_id, g.c.subject_id == o.c.subject_id, g.c.workspace_id == o.c.workspace_id
    )
    removed = exists().where(
        r.c.partner_id == o.c.partner_id,
        r.c.subject_id == o.c.subject_id,
        r.c.workspace_id == o.c.workspace_id,
        r.c.action.in_(_REMOVALS),
        r.c.done_at > o.c.last_seen_at,
    )
    query = (
        select(o, u.c.user_name.label("current_user_name"), u.c.active)
        .select_from(o.outerjoin(u, and_(u.c.id == o.c.subject_id, u.c.partner_id == o.c.partner_id)))
        .where(o.c.partner_id == partner.id, ~granted, ~removed)
        .order_by(o.c.workspace_id, o.c.first_found_at, o.c.id)
    )
    if workspace is not None:
        query = query.where(o.c.workspace_id == workspace.id)
    for row in stream(connection, query):
        yield OrphanedAccount(
            partner=partner.slug,
            workspace=slugs.get(row.workspace_id, row.workspace_id),
            subject_id=row.subject_id,
            user_name=row.current_user_name or row.user_name,
            remote_id=row.remote_id,
            person_state=person_state(row.active),
            first_found_at=row.first_found_at,
            last_seen_at=row.last_seen_at,
            age_days=days_between(row.first_found_at, options.now),
        )
