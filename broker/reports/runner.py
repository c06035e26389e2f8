"""The streaming stale-access report: for each partner in scope, each section's query, row by row.

Nothing is collected: every section is one SQL query whose rows are turned into typed rows as the
cursor yields them, and the whole report reads one snapshot (``broker.reports.snapshot``). Only
the partners (a few) and the workspace slugs (a few) are loaded up front.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Protocol

from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from broker.policy.store import active_policies
from broker.reports.expired_grants import expired_grants
from broker.reports.feeds import silent_feeds
from broker.reports.inactive import inactive_people
from broker.reports.orphans import orphaned_accounts
from broker.reports.revocations import pending_revocations
from broker.reports.rows import ReportRow
from broker.reports.scope import (
    PartnerRef,
    ReportOptions,
    ReportScope,
    WorkspaceRef,
    partners_in_scope,
    workspace_slugs,
)
from broker.reports.snapshot import report_connection
from broker.reports.tokens import scim_tokens

__all__ = ["SECTIONS", "SectionQuery", "policy_inactivity_days", "stale_access", "stale_access_rows"]


class SectionQuery(Protocol):
    """One section: one SQL query for one partner (and optionally one workspace), streamed as typed rows."""

    def __call__(
        self,
        connection: Connection,
        *,
        partner: PartnerRef,
        workspace: WorkspaceRef | None,
        slugs: Mapping[str, str],
        options: ReportOptions,
    ) -> Iterator[ReportRow]: ...


SECTIONS: tuple[SectionQuery, ...] = (
    orphaned_accounts,
    inactive_people,
    expired_grants,
    pending_revocations,
    silent_feeds,
    scim_tokens,
)
"""In report order (``broker.reports.rows.Section``)."""


def policy_inactivity_days(connection: Connection) -> dict[str, int]:
    """Partner slug -> the shortest ``inactive_after`` its rules in force set, in whole days (at least 1)."""
    with Session(bind=connection) as session:
        rules = active_policies(session).rules
    days: dict[str, int] = {}
    for rule in rules:
        if rule.inactive_after is not None:
            threshold = max(1, math.ceil(rule.inactive_after.total_seconds() / 86400))
            days[rule.tenant] = min(threshold, days.get(rule.tenant, threshold))
    return days


def stale_access_rows(connection: Connection, *, scope: ReportScope, options: ReportOptions) -> Iterator[ReportRow]:
    """Every row of the report on this connection: partners by slug, then sections in order.

    A partner whose policy rules set ``inactive_after`` is measured by that, the others by ``options``.
    """
    options = dataclasses.replace(options, inactive_days_by_partner=policy_inactivity_days(connection))
    partners = partners_in_scope(connection, scope)
    slugs = workspace_slugs(connection)
    for partner in partners:
        for section in SECTIONS:
            yield from section(connection, partner=partner, workspace=scope.workspace, slugs=slugs, options=options)


def stale_access(engine: Engine, *, scope: ReportScope, options: ReportOptions) -> Iterator[ReportRow]:
    """The report in its own read snapshot (see ``stale_access_rows``); the connection ends with the iterator."""
    with report_connection(engine) as connection:
        yield from stale_access_rows(connection, scope=scope, options=options)
