"""Section 5, silent feeds: partners whose SCIM feed has changed nothing for the report's N days.

The last change is the partner's newest lifecycle event (every accepted SCIM change that changed
something records one, deletions included), read through ``ix_lifecycle_event_partner_occurred``.
A feed can be silent because nothing happened at the partner, or because its IdP stopped pushing:
the last use of its SCIM tokens tells the two apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sqlalchemy import Exists, and_, exists, func, or_, select
from sqlalchemy.engine import Connection

from broker.lifecycle.events import LifecycleEvent
from broker.lifecycle.grants import AccessGrant
from broker.reports.rows import SilentFeed, days_between
from broker.reports.scope import PartnerRef, ReportOptions, WorkspaceRef
from broker.reports.snapshot import stream
from broker.tenants.models import Partner, ScimToken

__all__ = ["in_workspace", "silent_feeds"]

_PARTNERS = Partner.__table__  # type: ignore[attr-defined]
_EVENTS = LifecycleEvent.__table__  # type: ignore[attr-defined]
_TOKENS = ScimToken.__table__  # type: ignore[attr-defined]
_GRANTS = AccessGrant.__table__  # type: ignore[attr-defined]


def in_workspace(partner: PartnerRef, workspace: WorkspaceRef) -> Exists:
    """A partner-level finding belongs to a workspace's report when the partner's people hold grants there."""
    return exists().where(_GRANTS.c.partner_id == partner.id, _GRANTS.c.workspace_id == workspace.id)


def silent_feeds(
    connection: Connection,
    *,
    partner: PartnerRef,
    workspace: WorkspaceRef | None,
    slugs: Mapping[str, str],
    options: ReportOptions,
) -> Iterator[SilentFeed]:
    """The partner, if its feed is silent (and it has people granted in ``workspace``, if given): 0 or 1 row."""
    p, e, t = _PARTNERS, _EVENTS, _TOKENS
    last_change = select(func.max(e.c.occurred_at)).where(e.c.partner_id == partner.id).scalar_subquery()
    last_contact = select(func.max(t.c.last_used_at)).where(t.c.partner_id == partner.id).scalar_subquery()
    feed = (
        select(p.c.status, p.c.created_at, last_change.label("last_change"), last_contact.label("last_contact"))
        .where(p.c.id == partner.id)
        .subquery("feed")
    )
    cutoff = options.ago(options.silent_feed_days)
    query = select(feed).where(
        or_(feed.c.last_change < cutoff, and_(feed.c.last_change.is_(None), feed.c.created_at < cutoff))
    )
    if workspace is not None:
        query = query.where(in_workspace(partner, workspace))
    for row in stream(connection, query):
        since = row.last_change or row.created_at
        yield SilentFeed(
            partner=partner.slug,
            partner_status=row.status,
            last_change_at=row.last_change,
            last_contact_at=row.last_contact,
            silent_since=since,
            silent_days=days_between(since, options.now),
        )
