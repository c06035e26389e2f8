"""The transactional outbox: delivery tasks written with the decision that needs them, and their receipts.

A task is claimed by one worker at a time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite) under a lease, so a worker killed mid-delivery loses nothing: the lease runs
out and another claim picks the task up again (connectors are idempotent, so a repeat is harmless).
Tasks for one (workspace, person) are delivered in id order: the due tasks of a pair are claimed
together as one chain and delivered one after another, and nothing of a pair is claimable while an
earlier task of it runs or waits for a retry. Dead tasks do not block later ones, so a leaver's
revocation never waits behind an update the workspace refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, and_, case, delete, exists, func, insert, or_, select, update
from sqlmodel import Field, Session, SQLModel, col

from broker.types import UTCDateTime, utcnow

__all__ = [
    "DeliveryReceipt",
    "DeliveryTask",
    "QueueStats",
    "TaskAction",
    "TaskState",
    "claim_tasks",
    "complete_task",
    "complete_tasks",
    "enqueue",
    "held_claims",
    "queue_stats",
    "release_task",
    "reschedule_task",
    "retry_dead_tasks",
]


class TaskAction(StrEnum):
    UPDATE = "update"
    SUSPEND = "suspend"
    REVOKE_SESSIONS = "revoke_sessions"
    DEPROVISION = "deprovision"


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DEAD = "dead"
    """Attempts ran out or the workspace refused the request: visible, retryable by an operator."""


class DeliveryTask(SQLModel, table=True):
    """One intent for one person in one workspace, waiting to be delivered (deleted once it is)."""

    __tablename__ = "delivery_task"
    __table_args__ = (
        Index("ix_delivery_task_due", "state", "not_before"),
        Index("ix_delivery_task_pair", "workspace_id", "subject_id", "id"),
        # The id is the op_id receivers deduplicate on (webhook-id): SQLite must never hand out the id
        # of a delivered (deleted) task again, which it does without AUTOINCREMENT.
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: str = Field(max_length=36, foreign_key="workspace.id", ondelete="CASCADE")
    partner_id: str = Field(max_length=36)
    subject_id: str = Field(max_length=36)
    action: str = Field(max_length=32)
    spec: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    """The AccountSpec for ``update`` (as a JSON object); ``None`` for the other actions."""
    state: str = Field(default=TaskState.PENDING.value, max_length=16)
    attempts: int = Field(default=0)
    not_before: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    lease_until: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    cause: str = Field(max_length=64)
    """Why the task exists: ``event:<id>``, ``policy``, ``expiry`` or ``retry``."""
    accepted_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    """When the change that caused the task was accepted (the lifecycle event's time): the start of time-to-revoke."""
    first_attempt_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, max_length=1000)


class DeliveryReceipt(SQLModel, table=True):
    """Proof a task reached its workspace (or was buried): append-only, the source of time-to-revoke."""

    __tablename__ = "delivery_receipt"
    __table_args__ = (
        Index("ix_delivery_receipt_workspace_done", "workspace_id", "done_at"),
        Index("ix_delivery_receipt_subject", "partner_id", "subject_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: int
    workspace_id: str = Field(max_length=36, foreign_key="workspace.id", ondelete="CASCADE")
    partner_id: str = Field(max_length=36)
    subject_id: str = Field(max_length=36)
    action: str = Field(max_length=32)
    outcome: str = Field(max_length=16)
    """``changed`` | ``unchanged`` | ``unsupported`` (the workspace has no such lever; audited)."""
    remote_id: str | None = Field(default=None, max_length=512)
    attempts: int
    cause: str = Field(max_length=64)
    accepted_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    first_attempt_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    done_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


_TASKS = DeliveryTask.__table__  # type: ignore[attr-defined]
_RECEIPTS = DeliveryReceipt.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NewTask:
    """A task the engine wants written: what to do to whom, where, and why."""

    workspace_id: str
    partner_id: str
    subject_id: str
    action: TaskAction
    cause: str
    accepted_at: dt.datetime
    spec: dict[str, Any] | None = None


def enqueue(session: Session, tasks: Sequence[NewTask]) -> None:
    """Insert tasks in the caller's transaction (the outbox write), in the order given."""
    if not tasks:
        return
    now = utcnow()
    session.execute(
        insert(_TASKS),
        [
            {
                "workspace_id": t.workspace_id,
                "partner_id": t.partner_id,
                "subject_id": t.subject_id,
                "action": t.action.value,
                "spec": t.spec,
                "state": TaskState.PENDING.value,
                "attempts": 0,
                "not_before": now,
                "cause": t.cause,
                "accepted_at": t.accepted_at,
            }
            for t in tasks
        ],
    )


def claim_tasks(
    session: Session, *, limit: int, lease: dt.timedelta, exclude_workspaces: Sequence[str] = ()
) -> list[DeliveryTask]:
    """Claim up to ``limit`` due tasks (oldest first) and commit the claim.

    A (workspace, person) pair's due tasks are claimed together, as one chain in id order that the
    worker delivers one after another (a leaver's session revocation and removal in one round). A
    task is held back while an earlier task of its pair is running under a live lease, waits for a
    retry, or is outside this claim (locked by a concurrent claim or cut off by ``limit``), so no two
    workers ever deliver tasks of one pair at once and a pair's tasks never overtake each other.
    """
    now = utcnow()
    t, earlier = _TASKS, _TASKS.alias("earlier")
    due = or_(
        and_(t.c.state == TaskState.PENDING.value, t.c.not_before <= now),
        and_(t.c.state == TaskState.RUNNING.value, t.c.lease_until < now),
    )
    waiting = exists().where(
        earlier.c.workspace_id == t.c.workspace_id,
        earlier.c.subject_id == t.c.subject_id,
        earlier.c.id < t.c.id,
        or_(
            and_(earlier.c.state == TaskState.RUNNING.value, earlier.c.lease_until >= now),
            and_(earlier.c.state == TaskState.PENDING.value, earlier.c.not_before > now),
        ),
    )
    query = select(t.c.id, t.c.workspace_id, t.c.subject_id).where(due, ~waiting).order_by(t.c.id).limit(limit)
    if exclude_workspaces:
        query = query.where(t.c.workspace_id.not_in(list(exclude_workspaces)))
    if session.get_bind().dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True, of=t)
    candidates = session.execute(query).all()
    ids = _whole_chains(session, candidates)
    if not ids:
        session.rollback()
        return []
    session.execute(
        update(_TASKS)
        .where(_TASKS.c.id.in_(ids))
        .values(
            state=TaskState.RUNNING.value,
            lease_until=now + lease,
            attempts=_TASKS.c.attempts + 1,
            first_attempt_at=func.coalesce(_TASKS.c.first_attempt_at, now),
        )
    )
    claimed = select(DeliveryTask).where(col(DeliveryTask.id).in_(ids)).order_by(col(DeliveryTask.id))
    tasks = list(session.scalars(claimed).all())
    for task in tasks:
        session.expunge(task)  # plain values from here on: the commit below must not expire them
    session.commit()
    return tasks


def _whole_chains(session: Session, candidates: Sequence[Any]) -> list[int]:
    """The candidate ids not preceded by a live task of their pair that this claim does not hold.

    On PostgreSQL a concurrent claim may hold (lock) an earlier task of a pair whose later task we
    selected; that earlier task still reads as pending here, so the later one is left for a later round.
    """
    if not candidates:
        return []
    mine = {row.id for row in candidates}
    first_foreign: dict[tuple[str, str], int] = {}
    others = session.execute(
        select(_TASKS.c.id, _TASKS.c.workspace_id, _TASKS.c.subject_id).where(
            _TASKS.c.subject_id.in_({row.subject_id for row in candidates}),
            _TASKS.c.state.in_([TaskState.PENDING.value, TaskState.RUNNING.value]),
            _TASKS.c.id < max(mine),
        )
    )
    for row in others:
        if row.id not in mine:
            pair = (row.workspace_id, row.subject_id)
            first_foreign[pair] = min(row.id, first_foreign.get(pair, row.id))
    return [row.id for row in candidates if row.id < first_foreign.get((row.workspace_id, row.subject_id), row.id + 1)]


def _still_ours(task: DeliveryTask) -> Any:
    """The claim fence: the row is still running under the claim this worker made (same attempt count).

    A delivery that outlived its lease may have been claimed again by another worker; then only that
    worker may record the outcome, so the task gets exactly one receipt.
    """
    return and_(_TASKS.c.id == task.id, _TASKS.c.state == TaskState.RUNNING.value, _TASKS.c.attempts == task.attempts)


def held_claims(session: Session, tasks: Sequence[DeliveryTask]) -> set[int]:
    """The ids of ``tasks`` still running under the claims given (locked until the caller's commit).

    A task missing from the answer was claimed again by another worker after its lease ran out:
    only that worker may record its outcome, so the task gets exactly one receipt.
    """
    if not tasks:
        return set()
    attempts = {task.id: task.attempts for task in tasks}
    query = select(_TASKS.c.id, _TASKS.c.attempts).where(
        _TASKS.c.id.in_(list(attempts)), _TASKS.c.state == TaskState.RUNNING.value
    )
    if session.get_bind().dialect.name != "sqlite":  # SQLite: the transaction holds the write lock already
        query = query.with_for_update()
    return {row.id for row in session.execute(query) if attempts[row.id] == row.attempts}


def complete_tasks(session: Session, finished: Sequence[tuple[DeliveryTask, str, str | None]]) -> None:
    """Replace each (task, outcome, remote_id) by its receipt, in the caller's transaction.

    The caller holds the claims (``held_claims`` in the same transaction).
    """
    if not finished:
        return
    now = utcnow()
    session.execute(delete(_TASKS).where(_TASKS.c.id.in_([task.id for task, _, _ in finished])))
    session.execute(
        insert(_RECEIPTS),
        [
            {
                "task_id": task.id,
                "workspace_id": task.workspace_id,
                "partner_id": task.partner_id,
                "subject_id": task.subject_id,
                "action": task.action,
                "outcome": outcome,
                "remote_id": remote_id,
                "attempts": task.attempts,
                "cause": task.cause,
                "accepted_at": task.accepted_at,
                "first_attempt_at": task.first_attempt_at or now,
                "done_at": now,
            }
            for task, outcome, remote_id in finished
        ],
    )


def complete_task(session: Session, task: DeliveryTask, *, outcome: str, remote_id: str | None) -> bool:
    """Replace one task by its receipt, in the caller's transaction; ``False`` if the claim was lost."""
    if task.id not in held_claims(session, [task]):
        return False
    complete_tasks(session, [(task, outcome, remote_id)])
    return True


def reschedule_task(session: Session, task: DeliveryTask, *, delay: float | None, error: str) -> bool:
    """Put a failed task back in the queue after ``delay`` seconds, or bury it (``delay=None``); fenced too."""
    values: dict[str, Any] = {"last_error": error[:1000], "lease_until": None}
    if delay is None:
        values["state"] = TaskState.DEAD.value
    else:
        values["state"] = TaskState.PENDING.value
        values["not_before"] = utcnow() + dt.timedelta(seconds=delay)
    return bool(session.execute(update(_TASKS).where(_still_ours(task)).values(**values)).rowcount)  # type: ignore[attr-defined]


def release_task(session: Session, task: DeliveryTask) -> bool:
    """Hand back a claimed task that was not attempted (an earlier task of its chain must be retried first)."""
    values: dict[str, Any] = {
        "state": TaskState.PENDING.value,
        "lease_until": None,
        "attempts": _TASKS.c.attempts - 1,
        "first_attempt_at": case((_TASKS.c.attempts == 1, None), else_=_TASKS.c.first_attempt_at),
    }
    return bool(session.execute(update(_TASKS).where(_still_ours(task)).values(**values)).rowcount)  # type: ignore[attr-defined]


def retry_dead_tasks(
    session: Session, *, task_ids: Sequence[int] | None = None, workspace_id: str | None = None
) -> int:
    """Give dead tasks a fresh set of attempts now; returns how many. The caller commits."""
    query = update(_TASKS).where(_TASKS.c.state == TaskState.DEAD.value)
    if task_ids is not None:
        query = query.where(_TASKS.c.id.in_(list(task_ids)))
    if workspace_id is not None:
        query = query.where(_TASKS.c.workspace_id == workspace_id)
    result = session.execute(query.values(state=TaskState.PENDING.value, attempts=0, not_before=utcnow()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class QueueStats:
    """One workspace's queue, for `entente workspace status` and metrics."""

    pending: int
    running: int
    dead: int
    oldest_pending_at: dt.datetime | None
    last_done_at: dt.datetime | None
    last_error: str | None


def queue_stats(session: Session, *, workspace_id: str) -> QueueStats:
    """Counts by state, the oldest waiting task, the last receipt and the latest error of a workspace."""
    counts = dict(
        session.execute(
            select(_TASKS.c.state, func.count()).where(_TASKS.c.workspace_id == workspace_id).group_by(_TASKS.c.state)
        ).all()
    )
    oldest = session.execute(
        select(func.min(_TASKS.c.accepted_at)).where(
            _TASKS.c.workspace_id == workspace_id, _TASKS.c.state != TaskState.DEAD.value
        )
    ).scalar()
    last_done = session.execute(
        select(func.max(_RECEIPTS.c.done_at)).where(_RECEIPTS.c.workspace_id == workspace_id)
    ).scalar()
    last_error = session.execute(
        select(_TASKS.c.last_error)
        .where(_TASKS.c.workspace_id == workspace_id, _TASKS.c.last_error.is_not(None))
        .order_by(_TASKS.c.id.desc())
        .limit(1)
    ).scalar()
    return QueueStats(
        pending=int(counts.get(TaskState.PENDING.value, 0)),
        running=int(counts.get(TaskState.RUNNING.value, 0)),
        dead=int(counts.get(TaskState.DEAD.value, 0)),
        oldest_pending_at=oldest,
        last_done_at=last_done,
        last_error=last_error,
    )
