"""Section 6, SCIM tokens: live (not revoked) tokens that have expired, expire soon, or sit unused.

An expired token no longer authenticates, but until it is revoked it is a record nobody cleaned up,
and the feed that used it may have stopped with it; one expiring soon will stop a feed unless it is
rotated; an unused one is a credential nobody needs that can still leak.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from broker.reports.feeds import in_workspace
from broker.reports.rows import ScimTokenFinding, TokenStatus, days_between
from broker.reports.scope import PartnerRef, ReportOptions, WorkspaceRef
from broker.reports.snapshot import stream
from broker.tenants.models import ScimToken

__all__ = ["scim_tokens"]

_TOKENS = ScimToken.__table__  # type: ignore[attr-defined]


def _status(
    *, expires_at: dt.datetime, last_used_at: dt.datetime | None, soon: dt.datetime, now: dt.datetime
) -> TokenStatus:
    if expires_at <= now:
        return "expired"
    if expires_at <= soon:
        return "expiring"
    return "never_used" if last_used_at is None else "unused"


def scim_tokens(
    connection: Connection,
    *,
    partner: PartnerRef,
    workspace: WorkspaceRef | None,
    slugs: Mapping[str, str],
    options: ReportOptions,
) -> Iterator[ScimTokenFinding]:
    """The partner's tokens needing attention (if it has people granted in ``workspace``, when given), oldest first."""
    t = _TOKENS
    soon = options.now + dt.timedelta(days=options.token_expiry_days)
    unused_since = options.ago(options.token_unused_days)
    query = (
        select(t.c.id, t.c.label, t.c.created_at, t.c.expires_at, t.c.last_used_at)
        .where(
            t.c.partner_id == partner.id,
            t.c.revoked_at.is_(None),
            or_(
                t.c.expires_at <= soon,
                and_(t.c.last_used_at.is_(None), t.c.created_at < unused_since),
                t.c.last_used_at < unused_since,
            ),
        )
        .order_by(t.c.created_at, t.c.id)
    )
    if workspace is not None:
        query = query.where(in_workspace(partner, workspace))
    for row in stream(connection, query):
        yield ScimTokenFinding(
            partner=partner.slug,
            token_id=row.id,
            label=row.label,
            status=_status(expires_at=row.expires_at, last_used_at=row.last_used_at, soon=soon, now=options.now),
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            expires_in_days=days_between(options.now, row.expires_at),
            unused_days=days_between(row.last_used_at or row.created_at, options.now),
        )
