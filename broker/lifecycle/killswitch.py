"""The kill switch: suspend a person or a whole partner everywhere at once, with a reason, audited; and lift it.

Suspending adds nothing to delivery. It records a ``Suspension`` and re-decides the people it
covers in the same transaction; the engine (``reconcile_subjects``) decides no grants for a
suspended person, so every grant is lost and the existing leaver path does the rest: a
``revoke_sessions`` then ``suspend``/``deprovision`` task per workspace (delivered by the outbox
worker), and every Entente login session, token family and relying-party session ended (reason
``kill_switch``, back-channel logouts queued). Later SCIM changes of a suspended person are still
recorded, so lifting restores exactly what the policies grant *then* (a person who left meanwhile
stays out), with ``update`` tasks that reactivate the accounts. Login sessions are not restored:
the person signs in again.

Both operations serialise with the engine (its cursor row is locked, on PostgreSQL), so a batch
of events in flight cannot write a grant for a person being suspended.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.errors import Conflict, InvalidValue, NotFound
from broker.lifecycle import wakeup
from broker.lifecycle.engine import AccessChange, reconcile_partner, reconcile_subjects
from broker.lifecycle.grants import EngineCursor
from broker.lifecycle.suspensions import Suspension
from broker.policy.store import active_policies
from broker.provider.models import TokenFamily
from broker.scim.models import ScimUser
from broker.sessions.models import LoginSession
from broker.tenants.models import Partner
from broker.tenants.service import get_partner
from broker.types import utcnow
from broker.workspaces.models import Workspace

__all__ = [
    "KillOutcome",
    "find_person",
    "lift_partner",
    "lift_person",
    "suspend_partner",
    "suspend_person",
]

_ENGINE_CURSOR = "lifecycle"  # broker.lifecycle.engine's mutex row
_MAX_REASON = 500


@dataclass(frozen=True)
class KillOutcome:
    """What one suspension or lift did: for the CLI's summary and the console's confirmation page."""

    suspension_id: int
    partner_slug: str
    subject_id: str | None
    """The person, or ``None`` for the whole partner."""
    people: int
    """People whose access was re-decided."""
    changes: tuple[AccessChange, ...]
    """Grants lost (suspend) or regained (lift); each became delivery tasks."""
    sessions: int
    """Live login sessions and token families ended (suspend only)."""


def _reason(text: str) -> str:
    reason = " ".join(text.split())
    if not reason:
        raise InvalidValue("a reason is required (it is audited)")
    if len(reason) > _MAX_REASON:
        raise InvalidValue(f"the reason is longer than {_MAX_REASON} characters")
    return reason


def _serialise_with_engine(session: Session) -> None:
    """Wait for an engine batch in flight and keep the next one out until this transaction ends.

    SQLite needs nothing: every transaction there begins with the single write lock.
    """
    if session.get_bind().dialect.name != "sqlite":
        session.exec(select(EngineCursor).where(EngineCursor.name == _ENGINE_CURSOR).with_for_update()).first()


def find_person(session: Session, *, partner_id: str, person: str) -> ScimUser:
    """The partner's person whose SCIM id or userName (case-insensitive) is ``person``, else ``NotFound``."""
    text = person.strip()
    user = session.exec(select(ScimUser).where(ScimUser.partner_id == partner_id, ScimUser.id == text)).first()
    if user is None:
        user = session.exec(
            select(ScimUser).where(ScimUser.partner_id == partner_id, ScimUser.user_name_ci == text.lower())
        ).first()
    if user is None:
        raise NotFound(f"no person {person!r} at this partner")
    return user


def _live(session: Session, *, partner_id: str, subject_id: str | None) -> Suspension | None:
    query = select(Suspension).where(Suspension.partner_id == partner_id, col(Suspension.lifted_at).is_(None))
    query = query.where(
        col(Suspension.subject_id).is_(None) if subject_id is None else Suspension.subject_id == subject_id
    )
    return session.exec(query).first()


def _live_sessions(session: Session, *, partner_id: str, subject_ids: list[str] | None) -> int:
    """Live login sessions plus live token families of these people (all of the partner's with ``None``)."""
    logins = (
        select(func.count())
        .select_from(LoginSession)
        .where(LoginSession.partner_id == partner_id, col(LoginSession.ended_at).is_(None))
    )
    families = (
        select(func.count())
        .select_from(TokenFamily)
        .where(TokenFamily.partner_id == partner_id, col(TokenFamily.revoked_at).is_(None))
    )
    if subject_ids is not None:
        logins = logins.where(col(LoginSession.subject_id).in_(subject_ids))
        families = families.where(col(TokenFamily.subject_id).in_(subject_ids))
    return int(session.exec(logins).one()) + int(session.exec(families).one())


def _redecide(
    session: Session, *, partner_id: str, subject_id: str | None, cause: str, now: dt.datetime
) -> tuple[int, list[AccessChange]]:
    """Re-decide one person, or everyone of the partner, in the open transaction."""
    policies = active_policies(session)
    if subject_id is None:
        everyone = session.exec(select(func.count()).select_from(ScimUser).where(ScimUser.partner_id == partner_id))
        return int(everyone.one()), reconcile_partner(session, partner_id=partner_id, policies=policies, cause=cause)
    workspaces = list(session.exec(select(Workspace)).all())
    changes = reconcile_subjects(
        session,
        partner_id=partner_id,
        causes={subject_id: (cause, now)},
        policies=policies,
        workspaces=workspaces,
        now=now,
    )
    return 1, changes


def _redecide_and_commit(
    session: Session,
    *,
    row: Suspension,
    lifted: bool,
    partner: Partner,
    user_name: str | None,
    reason: str,
    actor: Actor,
    now: dt.datetime,
    sessions: int | None = None,
) -> KillOutcome:
    """Re-decide the people ``row`` covers, audit the engagement (or the lift) and commit.

    ``sessions``: the live sessions and token families the suspension ends (``None`` for a lift).
    The commit wakes this process's delivery worker, which delivers the revocations (or restores).
    """
    assert row.id is not None
    subject_id = row.subject_id
    action, cause, grants = (
        ("kill_switch.lifted", "kill_switch_lifted", "grants_restored")
        if lifted
        else ("kill_switch.engaged", "kill_switch", "grants_lost")
    )
    people, changes = _redecide(
        session, partner_id=partner.id, subject_id=subject_id, cause=f"{cause}:{row.id}", now=now
    )
    detail: dict[str, object] = {
        "suspension": row.id,
        "scope": "person" if subject_id else "partner",
        "partner": partner.slug,
        "user_name": user_name,
        "reason": reason,
        "people": people,
        grants: len(changes),
    }
    if sessions is not None:
        detail["sessions_ended"] = sessions
    append_audit(
        session,
        actor=actor,
        action=action,
        partner_id=partner.id,
        resource_type="User" if subject_id else "Partner",
        resource_id=subject_id or partner.id,
        detail=detail,
    )
    wakeup.mark(session)
    session.commit()
    return KillOutcome(row.id, partner.slug, subject_id, people, tuple(changes), sessions or 0)


def _suspend(
    session: Session, *, partner: Partner, subject_id: str | None, user_name: str | None, reason: str, actor: Actor
) -> KillOutcome:
    reason = _reason(reason)
    _serialise_with_engine(session)
    if _live(session, partner_id=partner.id, subject_id=subject_id) is not None:
        who = f"person {user_name}" if subject_id else f"partner {partner.slug}"
        raise Conflict(f"{who} is already suspended")
    now = utcnow()
    sessions = _live_sessions(session, partner_id=partner.id, subject_ids=[subject_id] if subject_id else None)
    row = Suspension(
        partner_id=partner.id,
        subject_id=subject_id,
        reason=reason,
        suspended_by=f"{actor.kind}:{actor.id}",
        suspended_at=now,
    )
    session.add(row)
    session.flush()
    return _redecide_and_commit(
        session,
        row=row,
        lifted=False,
        partner=partner,
        user_name=user_name,
        reason=reason,
        actor=actor,
        now=now,
        sessions=sessions,
    )


def _lift(
    session: Session, *, partner: Partner, subject_id: str | None, user_name: str | None, reason: str, actor: Actor
) -> KillOutcome:
    reason = _reason(reason)
    _serialise_with_engine(session)
    row = _live(session, partner_id=partner.id, subject_id=subject_id)
    if row is None:
        who = f"person {user_name}" if subject_id else f"partner {partner.slug}"
        raise NotFound(f"{who} is not suspended")
    now = utcnow()
    row.lifted_at, row.lifted_by, row.lift_reason = now, f"{actor.kind}:{actor.id}", reason
    session.add(row)
    session.flush()
    return _redecide_and_commit(
        session, row=row, lifted=True, partner=partner, user_name=user_name, reason=reason, actor=actor, now=now
    )


def suspend_person(session: Session, *, partner_slug: str, person: str, reason: str, actor: Actor) -> KillOutcome:
    """Suspend one person (SCIM id or userName) everywhere; commits. ``Conflict`` if already suspended.

    Independent of a partner-wide suspension: lifting that one leaves this one in force.
    """
    partner = get_partner(session=session, slug=partner_slug)
    user = find_person(session, partner_id=partner.id, person=person)
    return _suspend(session, partner=partner, subject_id=user.id, user_name=user.user_name, reason=reason, actor=actor)


def suspend_partner(session: Session, *, partner_slug: str, reason: str, actor: Actor) -> KillOutcome:
    """Suspend every person of a partner everywhere, present and future; commits.

    The partner's SCIM feed keeps being accepted (its leavers are recorded, so a lift never
    restores someone who left meanwhile); its people's federated logins get no workspace.
    """
    partner = get_partner(session=session, slug=partner_slug)
    return _suspend(session, partner=partner, subject_id=None, user_name=None, reason=reason, actor=actor)


def lift_person(session: Session, *, partner_slug: str, person: str, reason: str, actor: Actor) -> KillOutcome:
    """End a person's suspension and restore what the policies grant now; commits. ``NotFound`` if none."""
    partner = get_partner(session=session, slug=partner_slug)
    user = find_person(session, partner_id=partner.id, person=person)
    return _lift(session, partner=partner, subject_id=user.id, user_name=user.user_name, reason=reason, actor=actor)


def lift_partner(session: Session, *, partner_slug: str, reason: str, actor: Actor) -> KillOutcome:
    """End a partner-wide suspension; people suspended on their own stay suspended; commits."""
    partner = get_partner(session=session, slug=partner_slug)
    return _lift(session, partner=partner, subject_id=None, user_name=None, reason=reason, actor=actor)
