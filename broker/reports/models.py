"""What reconciliation found, kept for the stale-access report, and the index the feed section reads.

``find_drift`` compares a workspace's live listing with the grants and returns its findings; the
orphans among them (accounts of ours, sign-in enabled, no grant) exist nowhere else, so the report
could not show them without asking every workspace again. ``record_orphans`` keeps the latest
reconciliation's orphans per workspace, with when each was first and last seen.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from broker.lifecycle.events import LifecycleEvent
from broker.types import UTCDateTime

__all__ = ["ReconcileOrphan"]


class ReconcileOrphan(SQLModel, table=True):
    """An account a workspace lists as ours and enabled, for a person with no grant there, as last reconciled."""

    __tablename__ = "reconcile_orphan"
    __table_args__ = (
        Index("ix_reconcile_orphan_partner_workspace", "partner_id", "workspace_id"),
        Index("ix_reconcile_orphan_workspace", "workspace_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: str = Field(max_length=36, foreign_key="workspace.id", ondelete="CASCADE")
    partner_id: str = Field(max_length=36, foreign_key="partner.id", ondelete="CASCADE")
    subject_id: str = Field(max_length=36)
    remote_id: str | None = Field(default=None, max_length=512)
    user_name: str | None = Field(default=None, max_length=512)
    """As the workspace lists it (the person may since have been deleted at Entente)."""
    first_found_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    """The first reconciliation that found it; kept while later ones keep finding it."""
    last_seen_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    """The latest reconciliation that found it: a removal receipt after this means it is gone."""


_EVENTS = LifecycleEvent.__table__  # type: ignore[attr-defined]

# The feed section asks, per partner, when its last SCIM change arrived: max(occurred_at) for one
# partner, a single backward step on this index instead of a walk over all the partner's events.
# Declared here, with the migration that makes it (0009), so the lifecycle module stays untouched.
Index("ix_lifecycle_event_partner_occurred", _EVENTS.c.partner_id, _EVENTS.c.occurred_at)
