"""The stale-access report's typed rows, one dataclass per section, and their flat (CSV/table) form.

JSON Lines carry every typed field of a row; CSV and the table share one set of columns
(``COLUMNS``) so a single file holds all sections: what each section puts in ``ref``, ``status``,
``since`` and ``detail`` is said on its row class.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol

__all__ = [
    "COLUMNS",
    "ExpiredGrant",
    "InactivePerson",
    "OrphanedAccount",
    "PendingRevocation",
    "PersonState",
    "ReportRow",
    "ScimTokenFinding",
    "Section",
    "SilentFeed",
    "days_between",
    "person_state",
]

COLUMNS = ("section", "partner", "workspace", "subject_id", "user_name", "ref", "status", "since", "age_days", "detail")
"""The flat columns of every row, in CSV and table order."""

PersonState = Literal["active", "left", "deleted"]


class Section(StrEnum):
    """The report's sections, in the order the report gives them for each partner."""

    ORPHANED_ACCOUNTS = "orphaned_accounts"
    INACTIVE_PEOPLE = "inactive_people"
    EXPIRED_GRANTS = "expired_grants"
    PENDING_REVOCATIONS = "pending_revocations"
    SILENT_FEEDS = "silent_feeds"
    SCIM_TOKENS = "scim_tokens"


def days_between(start: dt.datetime, end: dt.datetime) -> float:
    """Whole and fractional days from ``start`` to ``end``, to the hundredth (negative if ``end`` is earlier)."""
    return round((end - start).total_seconds() / 86400, 2)


def person_state(active: bool | None) -> PersonState:
    """The person's state from their ``scim_user.active``; ``None`` (no row) means deleted at Entente."""
    if active is None:
        return "deleted"
    return "active" if active else "left"


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value is not None else ""


class ReportRow(Protocol):
    """What every section row offers the renderers."""

    section: ClassVar[Section]

    @property
    def partner(self) -> str: ...

    def flat(self) -> tuple[str, ...]: ...

    def as_json(self) -> dict[str, Any]: ...


class _Row:
    """Shared rendering: the typed fields as JSON (datetimes as ISO 8601), headed by the section."""

    section: ClassVar[Section]

    def as_json(self) -> dict[str, Any]:
        # a row's instance dict holds exactly its dataclass fields, in declaration order
        values = {name: _iso(v) if isinstance(v, dt.datetime) else v for name, v in vars(self).items()}
        return {"section": self.section.value, **values}


@dataclasses.dataclass(frozen=True)
class OrphanedAccount(_Row):
    """An account reconciliation found enabled in a workspace for a person with no grant there.

    Flat: ``ref`` the workspace's account id, ``status`` the person's state at Entente (``left`` or
    ``deleted`` for a leaver), ``since`` when reconciliation first found it.
    """

    section: ClassVar[Section] = Section.ORPHANED_ACCOUNTS
    partner: str
    workspace: str
    subject_id: str
    user_name: str | None
    remote_id: str | None
    person_state: PersonState
    first_found_at: dt.datetime
    last_seen_at: dt.datetime
    age_days: float

    def flat(self) -> tuple[str, ...]:
        return (
            self.section.value, self.partner, self.workspace, self.subject_id, self.user_name or "",
            self.remote_id or "", self.person_state, _iso(self.first_found_at), str(self.age_days),
            f"last seen {_iso(self.last_seen_at)}",
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class InactivePerson(_Row):
    """An active person with neither a login nor a SCIM change for the report's number of days.

    ``workspace`` is set when the report is for one workspace (the person holds a grant there).
    Flat: ``status`` ``never_logged_in`` or ``inactive``, ``since`` the last activity, ``detail`` the grants held.
    """

    section: ClassVar[Section] = Section.INACTIVE_PEOPLE
    partner: str
    workspace: str | None
    subject_id: str
    user_name: str
    last_login_at: dt.datetime | None
    last_scim_change_at: dt.datetime
    last_activity_at: dt.datetime
    inactive_days: float
    grants: int

    def flat(self) -> tuple[str, ...]:
        status = "never_logged_in" if self.last_login_at is None else "inactive"
        return (
            self.section.value, self.partner, self.workspace or "", self.subject_id, self.user_name, "", status,
            _iso(self.last_activity_at), str(self.inactive_days), f"{self.grants} grants",
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ExpiredGrant(_Row):
    """A grant whose end date has passed and which is still in force (grant expiry has not ended it).

    Flat: ``ref`` the rule that made it, ``status`` ``expired``, ``since`` its end date, ``detail`` its role.
    """

    section: ClassVar[Section] = Section.EXPIRED_GRANTS
    partner: str
    workspace: str
    subject_id: str
    user_name: str | None
    role: str
    rule_id: str
    until: dt.datetime
    overdue_days: float
    granted_at: dt.datetime

    def flat(self) -> tuple[str, ...]:
        return (
            self.section.value, self.partner, self.workspace, self.subject_id, self.user_name or "", self.rule_id,
            "expired", _iso(self.until), str(self.overdue_days), f"role {self.role}",
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PendingRevocation(_Row):
    """A revocation (session revocation, suspension or removal) not yet delivered: waiting, running or dead.

    Leavers' revocations, and those of people losing one workspace (a mover, an expired grant, a
    reconciliation repair): ``person_state`` tells them apart. ``age_seconds`` runs from when the
    change was accepted. Flat: ``ref`` ``task <id> <action>``, ``status`` the task state (``dead`` =
    a dead letter), ``detail`` the person's state and the last error.
    """

    section: ClassVar[Section] = Section.PENDING_REVOCATIONS
    partner: str
    workspace: str
    subject_id: str
    user_name: str | None
    person_state: PersonState
    task_id: int
    action: str
    state: str
    attempts: int
    cause: str
    accepted_at: dt.datetime
    age_seconds: float
    last_error: str | None

    def flat(self) -> tuple[str, ...]:
        detail = self.person_state + (f"; {self.last_error}" if self.last_error else "")
        return (
            self.section.value, self.partner, self.workspace, self.subject_id, self.user_name or "",
            f"task {self.task_id} {self.action}", self.state, _iso(self.accepted_at),
            str(round(self.age_seconds / 86400, 2)), detail,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SilentFeed(_Row):
    """A partner whose SCIM feed changed nothing for the report's number of days (or ever).

    ``last_contact_at`` is the last use of any of its SCIM tokens: a feed that still connects but
    sends no change differs from one that stopped connecting. ``silent_since`` is the last change,
    else when the partner was added. Flat: ``status`` ``never`` (no change ever) or ``silent``.
    """

    section: ClassVar[Section] = Section.SILENT_FEEDS
    partner: str
    partner_status: str
    last_change_at: dt.datetime | None
    last_contact_at: dt.datetime | None
    silent_since: dt.datetime
    silent_days: float

    def flat(self) -> tuple[str, ...]:
        status = "never" if self.last_change_at is None else "silent"
        contact = _iso(self.last_contact_at) or "never"
        return (
            self.section.value, self.partner, "", "", "", "", status, _iso(self.silent_since), str(self.silent_days),
            f"partner {self.partner_status}; last token use {contact}",
        )  # fmt: skip


TokenStatus = Literal["expired", "expiring", "never_used", "unused"]


@dataclasses.dataclass(frozen=True)
class ScimTokenFinding(_Row):
    """A SCIM token not revoked that has expired, expires soon, or has not been used for the report's days.

    ``status`` is the first that holds of ``expired``, ``expiring``, ``never_used``, ``unused``.
    Flat: ``ref`` the token id, ``since`` its last use (else its creation), ``detail`` its expiry and label.
    """

    section: ClassVar[Section] = Section.SCIM_TOKENS
    partner: str
    token_id: str
    label: str | None
    status: TokenStatus
    created_at: dt.datetime
    expires_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_in_days: float
    unused_days: float

    def flat(self) -> tuple[str, ...]:
        detail = f"expires {_iso(self.expires_at)}" + (f"; {self.label}" if self.label else "")
        return (
            self.section.value, self.partner, "", "", "", self.token_id, self.status,
            _iso(self.last_used_at or self.created_at), str(self.unused_days), detail,
        )  # fmt: skip
