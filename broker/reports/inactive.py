"""Section 2, inactive people: active people with no login and no SCIM change for the report's N days.

Activity is what Entente sees: the last login session it started for the person (``login_session``;
no last-login column exists, so the newest session's start is it) and the last SCIM change to them
(``scim_user.updated_at``, set by every accepted write that changed something). One query per
partner: the person table joined to per-person aggregates of sessions and grants, filtered in SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sqlalchemy import exists, func, or_, select, true
from sqlalchemy.engine import Connection

from broker.lifecycle.grants import AccessGrant
from broker.reports.rows import InactivePerson, days_between
from broker.reports.scope import PartnerRef, ReportOptions, WorkspaceRef
from broker.reports.snapshot import stream
from broker.scim.models import ScimUser
from broker.sessions.models import LoginSession

__all__ = ["inactive_people"]

_USERS = ScimUser.__table__  # type: ignore[attr-defined]
_SESSIONS = LoginSession.__table__  # type: ignore[attr-defined]
_GRANTS = AccessGrant.__table__  # type: ignore[attr-defined]


def inactive_people(
    connection: Connection,
    *,
    partner: PartnerRef,
    workspace: WorkspaceRef | None,
    slugs: Mapping[str, str],
    options: ReportOptions,
) -> Iterator[InactivePerson]:
    """The partner's inactive people (holding a grant in ``workspace``, if given), in creation order."""
    u, s, g = _USERS, _SESSIONS, _GRANTS
    cutoff = options.ago(options.inactive_days_for(partner.slug))
    logins = (
        select(s.c.subject_id, func.max(s.c.created_at).label("last_login"))
        .where(s.c.partner_id == partner.id)
        .group_by(s.c.subject_id)
        .subquery("logins")
    )
    grants = (
        select(g.c.subject_id, func.count().label("grants"))
        .where(g.c.partner_id == partner.id)
        .group_by(g.c.subject_id)
        .subquery("grants")
    )
    query = (
        select(u.c.id, u.c.user_name, u.c.updated_at, logins.c.last_login, grants.c.grants)
        .select_from(
            u.outerjoin(logins, logins.c.subject_id == u.c.id).outerjoin(grants, grants.c.subject_id == u.c.id)
        )
        .where(
            u.c.partner_id == partner.id,
            u.c.active == true(),
            u.c.updated_at < cutoff,
            or_(logins.c.last_login.is_(None), logins.c.last_login < cutoff),
        )
        .order_by(u.c.pk)
    )
    if workspace is not None:
        held = exists().where(g.c.partner_id == partner.id, g.c.subject_id == u.c.id, g.c.workspace_id == workspace.id)
        query = query.where(held)
    for row in stream(connection, query):
        last_activity = max(row.updated_at, row.last_login) if row.last_login is not None else row.updated_at
        yield InactivePerson(
            partner=partner.slug,
            workspace=workspace.slug if workspace is not None else None,
            subject_id=row.id,
            user_name=row.user_name,
            last_login_at=row.last_login,
            last_scim_change_at=row.updated_at,
            last_activity_at=last_activity,
            inactive_days=days_between(last_activity, options.now),
            grants=int(row.grants or 0),
        )
