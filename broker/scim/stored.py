"""Users as the SCIM services read them: plain frozen values loaded with Core statements.

A response or a write needs nine columns of a user, not an ORM object: loading one through the
identity map with change tracking costs more than the query itself, and nothing here is written
back through the unit of work (writes are Core UPDATEs keyed by ``pk`` and ``version``).

Each load also says whether the user is a member of any group (an EXISTS on the membership index),
so rendering skips the ``User.groups`` query for the many users who are in none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Row, exists

from broker.scim.models import GroupMember, ScimUser

__all__ = ["USER_COLUMNS", "USER_TABLE", "StoredUser"]

USER_TABLE = ScimUser.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StoredUser:
    """One stored user: what rendering (id, attributes, meta) and writing (pk, version, state) need."""

    pk: int
    id: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    joined_at: dt.datetime | None
    active: bool
    user_name_ci: str
    attributes: dict[str, Any]
    in_groups: bool
    """Whether any group of the partner lists the user as a member (when it was loaded)."""

    @classmethod
    def from_row(cls, row: Row[Any]) -> StoredUser:
        """From a row selected as ``select(*USER_COLUMNS)``."""
        return cls(**row._mapping)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> StoredUser:
        """A user just inserted, from its column values (extra columns are ignored): in no group yet."""
        return cls(**{name: values[name] for name in _COLUMN_FIELDS}, in_groups=False)


_MEMBERS = GroupMember.__table__  # type: ignore[attr-defined]
_COLUMN_FIELDS = tuple(f.name for f in fields(StoredUser) if f.name != "in_groups")
USER_COLUMNS = (
    *(USER_TABLE.c[name] for name in _COLUMN_FIELDS),
    exists()
    .where(_MEMBERS.c.partner_id == USER_TABLE.c.partner_id, _MEMBERS.c.member_id == USER_TABLE.c.id)
    .label("in_groups"),
)
"""Select these, in this order, for ``StoredUser.from_row``."""
