"""The lifecycle engine: lifecycle events + policies -> grants -> delivery tasks, in one transaction.

The engine is state-based: for every person an event touches it evaluates the policies on the
person's *current* SCIM state and diffs the decision with their current grants. Replaying an event
therefore changes nothing, and a batch of events about one person costs one evaluation. The grant
changes, their audit records, the delivery tasks and the advanced cursor commit together (the
transactional outbox), so an accepted change is either wholly turned into tasks or not at all.

    joiner   -> grants appear            -> ``update`` (provision) in each granted workspace
    mover    -> grants gained/lost/role  -> ``update``, or ``revoke_sessions`` + suspend/deprovision
    leaver   -> every grant lost         -> ``revoke_sessions`` + suspend/deprovision everywhere
    rejoiner -> grants appear again      -> ``update`` (reactivates a suspended account)
    killed   -> as a leaver, while a kill-switch suspension covers them (broker.lifecycle.killswitch)
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import delete, false, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.audit.log import Actor, AuditItem, append_audits, canonical_json
from broker.lifecycle.events import LifecycleEvent
from broker.lifecycle.facts import Person, load_people, transitive_user_members
from broker.lifecycle.grants import AccessGrant, EngineCursor
from broker.lifecycle.outbox import NewTask, TaskAction, enqueue
from broker.lifecycle.suspensions import suspended_subjects
from broker.policy.evaluate import evaluate
from broker.policy.facts import Grant
from broker.policy.model import PolicySet
from broker.policy.store import active_policies
from broker.provider.revocation import revoke_people
from broker.scim.models import ScimUser
from broker.types import utcnow
from broker.workspaces.models import OnLeave, Workspace

__all__ = [
    "AccessChange",
    "account_spec",
    "expire_grants",
    "process_events",
    "revocation_actions",
    "reconcile_partner",
    "reconcile_subjects",
]

_CURSOR = "lifecycle"
_ENGINE = Actor(kind="system", id="lifecycle-engine")
_GRANTS = AccessGrant.__table__  # type: ignore[attr-defined]
_EVENTS = LifecycleEvent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class AccessChange:
    """One person gaining, losing or changing access to one workspace: what `policy diff` prints."""

    partner_id: str
    subject_id: str
    user_name: str | None
    workspace: str
    change: Literal["gain", "lose", "change", "refresh"]
    role_before: str | None
    role_after: str | None
    rule_id: str | None
    until: dt.datetime | None


def _display_name(attributes: Mapping[str, str], user_name: str) -> str:
    given, family = attributes.get("name.givenName"), attributes.get("name.familyName")
    joined = " ".join(part for part in (given, family) if part)
    return attributes.get("displayName") or attributes.get("name.formatted") or joined or user_name


def account_spec(person: Person, workspace: Workspace, grant: Grant) -> dict[str, Any]:
    """The AccountSpec (as JSON) a grant means in a workspace: its role's groups, its mapped attributes."""
    attributes = person.facts.attributes
    return {
        "user_name": person.facts.user_name,
        "email": person.email,
        "display_name": _display_name(attributes, person.facts.user_name),
        "given_name": attributes.get("name.givenName"),
        "family_name": attributes.get("name.familyName"),
        "roles": [grant.role],
        "groups": sorted(workspace.role_groups.get(grant.role, [])),
        "active": True,
        "attributes": {
            name: attributes[path] for name, path in sorted(workspace.attribute_map.items()) if path in attributes
        },
    }


def _spec_digest(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(spec)).hexdigest()


def revocation_actions(workspace: Workspace) -> list[TaskAction]:
    """Losing access: end sessions first, then disable or remove the account, as the workspace is set."""
    last = TaskAction.SUSPEND if workspace.on_leave == OnLeave.SUSPEND.value else TaskAction.DEPROVISION
    return [TaskAction.REVOKE_SESSIONS, last]


def reconcile_subjects(
    session: Session,
    *,
    partner_id: str,
    causes: Mapping[str, tuple[str, dt.datetime]],
    policies: PolicySet,
    workspaces: Sequence[Workspace],
    now: dt.datetime,
) -> list[AccessChange]:
    """Bring the grants of these people to what the policies decide now, enqueueing what must be delivered.

    ``causes`` maps each subject id to (cause, accepted_at): the task's reason and the moment its
    time-to-deliver starts. Writes in the caller's transaction; the caller commits (or rolls back
    for a dry run).
    """
    by_slug = {w.slug: w for w in workspaces}
    by_id = {w.id: w for w in workspaces}
    people = load_people(session, partner_id=partner_id, subject_ids=causes)
    suspended = suspended_subjects(session, partner_id=partner_id, subject_ids=causes)  # kill switch: no grants
    current: dict[str, dict[str, AccessGrant]] = defaultdict(dict)
    for grant_row in session.exec(
        select(AccessGrant).where(AccessGrant.partner_id == partner_id, col(AccessGrant.subject_id).in_(list(causes)))
    ).all():
        current[grant_row.subject_id][grant_row.workspace_id] = grant_row
    changes: list[AccessChange] = []
    tasks: list[NewTask] = []
    lost_grant_ids: list[int | None] = []
    for subject_id, (cause, accepted_at) in causes.items():
        person = people.get(subject_id)
        granted: dict[str, Grant] = {}
        if person is not None and person.facts.active and subject_id not in suspended:
            granted = {g.workspace: g for g in evaluate(policies, person.facts, now).grants if g.workspace in by_slug}
        held = dict(current.get(subject_id, {}))
        user_name = person.facts.user_name if person else None

        def task(workspace: Workspace, action: TaskAction, spec: dict[str, Any] | None = None) -> None:
            tasks.append(NewTask(workspace.id, partner_id, subject_id, action, cause, accepted_at, spec))  # noqa: B023

        for slug, grant in sorted(granted.items()):
            workspace = by_slug[slug]
            assert person is not None
            spec = account_spec(person, workspace, grant)
            spec_sha256 = _spec_digest(spec)
            row = held.pop(workspace.id, None)
            values = {"role": grant.role, "rule_id": grant.rule_id, "until": grant.until, "spec_sha256": spec_sha256}
            if row is None:
                session.execute(
                    insert(_GRANTS),
                    {
                        "partner_id": partner_id,
                        "subject_id": subject_id,
                        "workspace_id": workspace.id,
                        "granted_at": now,
                        **values,
                    },
                )
                kind: Literal["gain", "lose", "change", "refresh"] = "gain"
                before_role = None
            elif (row.role, row.rule_id, row.until, row.spec_sha256) != tuple(values.values()):
                session.execute(update(_GRANTS).where(_GRANTS.c.id == row.id).values(**values))
                kind, before_role = ("change" if row.role != grant.role else "refresh"), row.role
            else:
                continue
            if row is None or row.spec_sha256 != spec_sha256:
                task(workspace, TaskAction.UPDATE, spec)
            changes.append(
                AccessChange(
                    partner_id, subject_id, user_name, slug, kind, before_role, grant.role, grant.rule_id, grant.until
                )
            )
        for workspace_id, row in held.items():
            lost = by_id.get(workspace_id)
            if lost is None:
                continue
            lost_grant_ids.append(row.id)
            for action in revocation_actions(lost):
                task(lost, action)
            changes.append(
                AccessChange(
                    partner_id, subject_id, user_name, lost.slug, "lose", row.role, None, row.rule_id, row.until
                )
            )
    if lost_grant_ids:
        session.execute(delete(_GRANTS).where(_GRANTS.c.id.in_(lost_grant_ids)))
    append_audits(
        session,
        actor=_ENGINE,
        items=[
            AuditItem(
                action=f"access.{change.change}",
                partner_id=partner_id,
                resource_type="Grant",
                resource_id=change.subject_id,
                detail={
                    "workspace": change.workspace,
                    "role": change.role_after,
                    "role_before": change.role_before,
                    "rule_id": change.rule_id,
                    "until": change.until.isoformat() if change.until else None,
                    "cause": causes[change.subject_id][0],
                },
            )
            for change in changes
        ],
    )
    enqueue(session, tasks)
    gone = [s for s in causes if s not in people or not people[s].facts.active]
    revoke_people(session, partner_id=partner_id, subject_ids=gone, reason="left")  # sessions die with access
    killed = suspended.difference(gone)
    revoke_people(session, partner_id=partner_id, subject_ids=killed, reason="kill_switch")
    return changes


def _lock_cursor(session: Session) -> EngineCursor | None:
    """The engine's mutex row, locked for this transaction; ``None`` if another process holds it right now.

    One engine at a time: two engines deciding for the same person at once would both write grants.
    """
    query = select(EngineCursor).where(EngineCursor.name == _CURSOR)
    if session.get_bind().dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    cursor = session.exec(query).first()
    if cursor is None:
        exists = session.exec(select(func.count()).select_from(EngineCursor).where(EngineCursor.name == _CURSOR)).one()
        if exists:
            return None  # the row exists but is locked by another engine
        cursor = EngineCursor(name=_CURSOR, last_event_id=0)
        try:
            with session.begin_nested():  # two engines' first runs both make the row: the second waits its turn
                session.add(cursor)
        except IntegrityError:
            return None
    return cursor


def _affected(session: Session, events: Iterable[LifecycleEvent]) -> dict[str, dict[str, tuple[str, dt.datetime]]]:
    """Per partner, the people the events touch, each with the first event that touched them."""
    affected: dict[str, dict[str, tuple[str, dt.datetime]]] = defaultdict(dict)
    for event in events:
        cause = (f"event:{event.id}", event.occurred_at)
        if event.subject_type == "user":
            subjects: Iterable[str] = [event.subject_id]
        elif event.kind in ("groups_changed", "group_updated"):
            subjects = transitive_user_members(session, partner_id=event.partner_id, group_ids=[event.subject_id])
        else:
            continue  # group_created (no members yet) / group_deleted (members got their own events)
        for subject_id in subjects:
            affected[event.partner_id].setdefault(subject_id, cause)
    return affected


def process_events(session: Session, *, limit: int = 500) -> int:
    """Turn the next ``limit`` lifecycle events into grants and tasks; returns how many were consumed.

    Commits once for the whole batch. Returns 0 when there is nothing to do or another process is
    doing it (its own worker delivers what it enqueues).
    """
    cursor = _lock_cursor(session)
    if cursor is None:
        session.rollback()
        return 0
    events = session.exec(
        select(LifecycleEvent)
        # Not ``id > last_event_id``: PostgreSQL hands out ids before commit, so a lower id can commit
        # after a higher one was consumed; the flag (and its partial index) never skips it.
        .where(col(LifecycleEvent.consumed) == false())
        .order_by(col(LifecycleEvent.id))
        .limit(limit)
    ).all()
    if not events:
        session.commit()
        return 0
    workspaces = list(session.exec(select(Workspace)).all())
    affected = _affected(session, events) if workspaces else {}  # no workspace: nobody can gain or lose anything
    if affected:
        policies = active_policies(session)
        now = utcnow()
        for partner_id, causes in affected.items():
            reconcile_subjects(
                session, partner_id=partner_id, causes=causes, policies=policies, workspaces=workspaces, now=now
            )
    ids = [event.id for event in events]
    session.execute(update(_EVENTS).where(_EVENTS.c.id.in_(ids)).values(consumed=True))
    cursor.last_event_id = max(cursor.last_event_id, *(i for i in ids if i is not None))
    session.add(cursor)
    session.commit()
    return len(events)


def reconcile_partner(
    session: Session, *, partner_id: str, policies: PolicySet, cause: str, batch: int = 500
) -> list[AccessChange]:
    """Re-decide every person of a partner (after a policy or workspace change); the caller commits."""
    workspaces = list(session.exec(select(Workspace)).all())
    now = utcnow()
    subject_ids = list(session.exec(select(ScimUser.id).where(ScimUser.partner_id == partner_id)).all())
    holders = session.exec(select(AccessGrant.subject_id).where(AccessGrant.partner_id == partner_id)).all()
    everyone = sorted(set(subject_ids) | set(holders))
    changes: list[AccessChange] = []
    for start in range(0, len(everyone), batch):
        chunk = everyone[start : start + batch]
        changes += reconcile_subjects(
            session,
            partner_id=partner_id,
            causes={subject_id: (cause, now) for subject_id in chunk},
            policies=policies,
            workspaces=workspaces,
            now=now,
        )
    return changes


def expire_grants(session: Session, *, now: dt.datetime | None = None) -> list[AccessChange]:
    """End grants past their end date (the scheduler's job), by re-deciding their holders; commits."""
    now = now or utcnow()
    due = session.exec(
        select(AccessGrant.partner_id, AccessGrant.subject_id, AccessGrant.until).where(
            col(AccessGrant.until).is_not(None), col(AccessGrant.until) <= now
        )
    ).all()
    if not due:
        return []
    policies = active_policies(session)
    workspaces = list(session.exec(select(Workspace)).all())
    by_partner: dict[str, dict[str, tuple[str, dt.datetime]]] = defaultdict(dict)
    for partner_id, subject_id, until in due:
        by_partner[partner_id][subject_id] = ("expiry", until or now)
    changes: list[AccessChange] = []
    for partner_id, causes in by_partner.items():
        changes += reconcile_subjects(
            session, partner_id=partner_id, causes=causes, policies=policies, workspaces=workspaces, now=now
        )
    session.commit()
    return changes


def change_as_row(change: AccessChange) -> dict[str, Any]:
    """A JSON-ready dict of a change, for the CLI and API."""
    row = asdict(change)
    row["until"] = change.until.isoformat() if change.until else None
    return row
