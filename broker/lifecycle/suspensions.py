"""Kill-switch suspensions: the table, and the one question the engine asks of it (who is suspended now).

A suspension names a partner and either one person (``subject_id``) or, with ``subject_id`` left
empty, every person of that partner. While it is live (``lifted_at`` empty) the engine decides no
grants for the people it covers, whatever the policies say, so the ordinary leaver path revokes
them everywhere. Rows are never deleted: a lifted suspension keeps who lifted it, when and why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Column, ColumnElement, Exists, Index, exists, or_
from sqlmodel import Field, Session, SQLModel, col, select

from broker.types import UTCDateTime, utcnow

__all__ = ["Suspension", "live_suspensions", "suspended_subjects", "suspension_covers"]


class Suspension(SQLModel, table=True):
    """One use of the kill switch, on a person or on a whole partner, and its lifting."""

    __tablename__ = "suspension"
    __table_args__ = (Index("ix_suspension_partner_live", "partner_id", "lifted_at"),)

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=36, foreign_key="partner.id", ondelete="CASCADE")
    subject_id: str | None = Field(default=None, max_length=36)
    """The suspended person's SCIM id; ``None`` suspends every person of the partner."""
    reason: str = Field(max_length=500)
    suspended_by: str = Field(max_length=240)
    """The actor as ``kind:id`` (an operator at the CLI, a console admin)."""
    suspended_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    lifted_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    lifted_by: str | None = Field(default=None, max_length=240)
    lift_reason: str | None = Field(default=None, max_length=500)


def live_suspensions(session: Session, *, partner_id: str | None = None) -> list[Suspension]:
    """Suspensions in force, oldest first; of one partner when ``partner_id`` is given, else of all."""
    query = select(Suspension).where(col(Suspension.lifted_at).is_(None))
    if partner_id is not None:
        query = query.where(Suspension.partner_id == partner_id)
    return list(session.exec(query.order_by(col(Suspension.id))).all())


def suspension_covers(partner_id: ColumnElement[Any], subject_id: ColumnElement[Any]) -> Exists:
    """SQL for "a live suspension covers the person these columns name" (their partner wholly, or them),
    so a query reading a person reads it in the same round trip (admission, identity binding)."""
    table = Suspension.__table__  # type: ignore[attr-defined]
    return exists().where(
        table.c.partner_id == partner_id,
        table.c.lifted_at.is_(None),
        or_(table.c.subject_id.is_(None), table.c.subject_id == subject_id),
    )


def suspended_subjects(session: Session, *, partner_id: str, subject_ids: Iterable[str]) -> set[str]:
    """Which of these people of the partner a live suspension covers (all of them if the partner is).

    One query, so the engine can ask for every batch it decides.
    """
    ids = sorted(set(subject_ids))
    if not ids:
        return set()
    rows = session.exec(
        select(Suspension.subject_id).where(
            Suspension.partner_id == partner_id,
            col(Suspension.lifted_at).is_(None),
            or_(col(Suspension.subject_id).is_(None), col(Suspension.subject_id).in_(ids)),
        )
    ).all()
    if any(subject is None for subject in rows):
        return set(ids)
    return {subject for subject in rows if subject is not None}
