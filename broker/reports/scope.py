"""Who and what a stale-access report covers (partner, workspace) and its thresholds, resolved once up front.

Slugs are resolved before any row is streamed, so an unknown one is an error response and not a
broken stream. A partner caller is pinned to its own partner: naming another answers exactly like
naming a missing one (``NotFound``), and an unknown workspace gives it an empty report rather than a
404, so the report is no oracle for what exists beyond the caller's own data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from broker.errors import InvalidValue, NotFound
from broker.settings import Settings
from broker.tenants.models import Partner
from broker.types import utcnow
from broker.workspaces.models import Workspace

__all__ = [
    "PartnerRef",
    "ReportOptions",
    "ReportScope",
    "WorkspaceRef",
    "partners_in_scope",
    "resolve_scope",
    "workspace_slugs",
]

_PARTNERS = Partner.__table__.c  # type: ignore[attr-defined]
_WORKSPACES = Workspace.__table__.c  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class PartnerRef:
    id: str
    slug: str


@dataclasses.dataclass(frozen=True)
class WorkspaceRef:
    id: str
    slug: str


@dataclasses.dataclass(frozen=True)
class ReportScope:
    """``partner`` / ``workspace`` ``None`` = all of them; ``empty`` = nothing can match (see the module)."""

    partner: PartnerRef | None = None
    workspace: WorkspaceRef | None = None
    empty: bool = False


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """The thresholds, in days, and the one instant every section measures against."""

    inactive_days: int
    silent_feed_days: int
    token_expiry_days: int
    token_unused_days: int
    now: dt.datetime
    inactive_days_by_partner: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Partner slug -> the threshold its policy rules set (``inactive_after``); others use ``inactive_days``."""

    def inactive_days_for(self, partner_slug: str) -> int:
        """The partner's own threshold if its policy sets one, else the report's."""
        return self.inactive_days_by_partner.get(partner_slug, self.inactive_days)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        inactive_days: int | None = None,
        silent_feed_days: int | None = None,
        token_expiry_days: int | None = None,
        token_unused_days: int | None = None,
        now: dt.datetime | None = None,
    ) -> ReportOptions:
        """The settings' defaults, each overridable; a negative number of days is ``InvalidValue``."""
        options = cls(
            inactive_days=settings.report_inactive_days if inactive_days is None else inactive_days,
            silent_feed_days=settings.report_silent_feed_days if silent_feed_days is None else silent_feed_days,
            token_expiry_days=settings.report_token_expiry_days if token_expiry_days is None else token_expiry_days,
            token_unused_days=settings.report_token_unused_days if token_unused_days is None else token_unused_days,
            now=now or utcnow(),
        )
        for field in ("inactive_days", "silent_feed_days", "token_expiry_days", "token_unused_days"):
            if getattr(options, field) < 0:
                raise InvalidValue(f"{field} must be 0 or more days")
        return options

    def ago(self, days: int) -> dt.datetime:
        return self.now - dt.timedelta(days=days)


def resolve_scope(
    session: Session,
    *,
    partner_slug: str | None,
    workspace_slug: str | None,
    caller_partner_id: str | None = None,
) -> ReportScope:
    """Turn slugs into ids; ``caller_partner_id`` pins a partner caller to itself. Raises ``NotFound``."""
    partner: PartnerRef | None = None
    if caller_partner_id is not None:
        row = session.execute(select(_PARTNERS.id, _PARTNERS.slug).where(_PARTNERS.id == caller_partner_id)).one()
        if partner_slug is not None and partner_slug != row.slug:
            raise NotFound(f"no partner '{partner_slug}'")
        partner = PartnerRef(row.id, row.slug)
    elif partner_slug is not None:
        found = session.execute(select(_PARTNERS.id, _PARTNERS.slug).where(_PARTNERS.slug == partner_slug)).first()
        if found is None:
            raise NotFound(f"no partner '{partner_slug}'")
        partner = PartnerRef(found.id, found.slug)
    if workspace_slug is None:
        return ReportScope(partner=partner)
    ws = session.execute(select(_WORKSPACES.id, _WORKSPACES.slug).where(_WORKSPACES.slug == workspace_slug)).first()
    if ws is None:
        if caller_partner_id is not None:
            return ReportScope(partner=partner, empty=True)
        raise NotFound(f"no workspace {workspace_slug!r}")
    return ReportScope(partner=partner, workspace=WorkspaceRef(ws.id, ws.slug))


def partners_in_scope(connection: Connection, scope: ReportScope) -> list[PartnerRef]:
    """The partners the report walks, by slug (a list of partners, never of their people)."""
    if scope.empty:
        return []
    if scope.partner is not None:
        return [scope.partner]
    rows = connection.execute(select(_PARTNERS.id, _PARTNERS.slug).order_by(_PARTNERS.slug))
    return [PartnerRef(row.id, row.slug) for row in rows]


def workspace_slugs(connection: Connection) -> Mapping[str, str]:
    """Workspace id -> slug, for labelling rows (workspaces are few; rows then need no join)."""
    return {row.id: row.slug for row in connection.execute(select(_WORKSPACES.id, _WORKSPACES.slug))}
