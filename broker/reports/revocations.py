"""Section 4, pending revocations: leavers' (and other lost access's) revocations waiting, running or dead.

A revocation is a delivery task ending sessions, suspending or removing an account. Until its
receipt replaces it, the person may still get in: the row's age is the time since the change that
caused it was accepted. Dead letters (``state`` ``dead``) wait for an operator (`entente outbox retry`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from broker.lifecycle.outbox import DeliveryTask, TaskAction
from broker.reports.rows import PendingRevocation, person_state
from broker.reports.scope import PartnerRef, ReportOptions, WorkspaceRef
from broker.reports.snapshot import stream
from broker.scim.models import ScimUser

__all__ = ["REVOCATIONS", "pending_revocations"]

REVOCATIONS = (TaskAction.REVOKE_SESSIONS.value, TaskAction.SUSPEND.value, TaskAction.DEPROVISION.value)
_TASKS = DeliveryTask.__table__  # type: ignore[attr-defined]
_USERS = ScimUser.__table__  # type: ignore[attr-defined]


def pending_revocations(
    connection: Connection,
    *,
    partner: PartnerRef,
    workspace: WorkspaceRef | None,
    slugs: Mapping[str, str],
    options: ReportOptions,
) -> Iterator[PendingRevocation]:
    """The partner's undelivered revocation tasks (in ``workspace``, if given), oldest change first."""
    t, u = _TASKS, _USERS
    query = (
        select(
            t.c.id,
            t.c.workspace_id,
            t.c.subject_id,
            t.c.action,
            t.c.state,
            t.c.attempts,
            t.c.cause,
            t.c.accepted_at,
            t.c.last_error,
            u.c.user_name,
            u.c.active,
        )
        .select_from(t.outerjoin(u, and_(u.c.id == t.c.subject_id, u.c.partner_id == t.c.partner_id)))
        .where(t.c.partner_id == partner.id, t.c.action.in_(REVOCATIONS))
        .order_by(t.c.accepted_at, t.c.id)
    )
    if workspace is not None:
        query = query.where(t.c.workspace_id == workspace.id)
    for row in stream(connection, query):
        yield PendingRevocation(
            partner=partner.slug,
            workspace=slugs.get(row.workspace_id, row.workspace_id),
            subject_id=row.subject_id,
            user_name=row.user_name,
            person_state=person_state(row.active),
            task_id=row.id,
            action=row.action,
            state=row.state,
            attempts=row.attempts,
            cause=row.cause,
            accepted_at=row.accepted_at,
            age_seconds=round((options.now - row.accepted_at).total_seconds(), 3),
            last_error=row.last_error,
        )
