"""Section 3, expired grants: grants whose end date has passed but that are still in force.

Grant expiry (the scheduler's job every ``ENTENTE_GRANT_EXPIRY_INTERVAL_SECONDS``) ends them; a row
here means that job is not running, or keeps failing, and the person still has the access.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from broker.lifecycle.grants import AccessGrant
from broker.reports.rows import ExpiredGrant, days_between
from broker.reports.scope import PartnerRef, ReportOptions, WorkspaceRef
from broker.reports.snapshot import stream
from broker.scim.models import ScimUser

__all__ = ["expired_grants"]

_GRANTS = AccessGrant.__table__  # type: ignore[attr-defined]
_USERS = ScimUser.__table__  # type: ignore[attr-defined]


def expired_grants(
    connection: Connection,
    *,
    partner: PartnerRef,
    workspace: WorkspaceRef | None,
    slugs: Mapping[str, str],
    options: ReportOptions,
) -> Iterator[ExpiredGrant]:
    """The partner's grants with ``until`` at or before now (in ``workspace``, if given), longest overdue first."""
    g, u = _GRANTS, _USERS
    query = (
        select(g, u.c.user_name)
        .select_from(g.outerjoin(u, and_(u.c.id == g.c.subject_id, u.c.partner_id == g.c.partner_id)))
        .where(g.c.partner_id == partner.id, g.c.until.is_not(None), g.c.until <= options.now)
        .order_by(g.c.until, g.c.id)
    )
    if workspace is not None:
        query = query.where(g.c.workspace_id == workspace.id)
    for row in stream(connection, query):
        yield ExpiredGrant(
            partner=partner.slug,
            workspace=slugs.get(row.workspace_id, row.workspace_id),
            subject_id=row.subject_id,
            user_name=row.user_name,
            role=row.role,
            rule_id=row.rule_id,
            until=row.until,
            overdue_days=days_between(row.until, options.now),
            granted_at=row.granted_at,
        )
