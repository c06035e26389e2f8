"""Stale-access reports: per partner and workspace, what access outlived its reason, streamed from SQL."""

from broker.reports.models import ReconcileOrphan
from broker.reports.orphans import record_orphans
from broker.reports.render import ReportFormat, render
from broker.reports.rows import (
    COLUMNS,
    ExpiredGrant,
    InactivePerson,
    OrphanedAccount,
    PendingRevocation,
    ReportRow,
    ScimTokenFinding,
    Section,
    SilentFeed,
)
from broker.reports.runner import stale_access, stale_access_rows
from broker.reports.scope import ReportOptions, ReportScope, resolve_scope

__all__ = [
    "COLUMNS",
    "ExpiredGrant",
    "InactivePerson",
    "OrphanedAccount",
    "PendingRevocation",
    "ReconcileOrphan",
    "ReportFormat",
    "ReportOptions",
    "ReportRow",
    "ReportScope",
    "ScimTokenFinding",
    "Section",
    "SilentFeed",
    "record_orphans",
    "render",
    "resolve_scope",
    "stale_access",
    "stale_access_rows",
]
