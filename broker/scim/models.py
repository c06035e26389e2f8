"""SCIM storage: the resource JSON is the truth; promoted columns and a value index make filters SQL.

Every table carries ``partner_id`` and every B-tree index starts with it, so each query is
tenant-scoped and tenant-local uniqueness (no cross-partner 409 oracle) falls out of the keys.

Folded (``*_ci``) columns compare bytewise on both databases: SQLite's default BINARY collation,
``COLLATE "C"`` on PostgreSQL. Their B-tree indexes then serve equality, ranges and ``sw`` prefixes
alike, whatever the database's own collation. On PostgreSQL, trigram (pg_trgm) GIN indexes serve
``co``, ``sw`` and ``ew`` on the attributes people search by; they hold every partner's rows, and
the ``partner_id`` condition filters what they find. There ``scim_user`` also keeps a fifth of each
page free (``fillfactor`` 80, set by the migration), so updates that change no indexed column are
HOT updates, which touch none of its indexes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = ["GroupMember", "ScimGroup", "ScimUser", "ScimValue", "folded", "trigram_index"]


def folded(length: int) -> TypeEngine[str]:
    """A folded column's type: ``VARCHAR(length)``, ``COLLATE "C"`` on PostgreSQL (see above)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def trigram_index(name: str, column: str) -> Index:
    """A pg_trgm GIN index on PostgreSQL. SQLite has no such index, so there it is declared empty
    (``WHERE 0``: never filled, never used) and both databases hold the indexes the models name."""
    return Index(name, column, postgresql_using="gin", postgresql_ops={column: "gin_trgm_ops"}, sqlite_where=text("0"))


class ScimUser(SQLModel, table=True):
    """A partner's person, as their IdP pushed them (RFC 7643 §4.1 with the §4.3 enterprise extension)."""

    __tablename__ = "scim_user"
    __table_args__ = (
        UniqueConstraint("partner_id", "user_name_ci", name="uq_scim_user_partner_user_name"),
        Index("ix_scim_user_partner_external_id", "partner_id", "external_id"),
        Index("ix_scim_user_partner_pk", "partner_id", "pk"),
        trigram_index("ix_scim_user_user_name_trgm", "user_name_ci"),
        trigram_index("ix_scim_user_display_name_trgm", "display_name"),
        trigram_index("ix_scim_user_family_name_trgm", "name_family_name"),
        trigram_index("ix_scim_user_given_name_trgm", "name_given_name"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    """Insertion order: the stable default sort for pagination."""
    id: str = Field(unique=True, max_length=36)
    partner_id: str = Field(foreign_key="partner.id", max_length=36, ondelete="CASCADE")
    version: int = Field(default=1)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    joined_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    """First time the user was active: set once, so a later activation is a rejoin."""
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The SCIM representation without id, meta, groups and password."""

    # Promoted, derived from ``attributes`` on every write (broker.scim.resources.user_columns).
    user_name: str = Field(max_length=512)
    user_name_ci: str = Field(sa_column=Column(folded(512), nullable=False))
    external_id: str | None = Field(default=None, max_length=512)
    active: bool = Field(default=True)
    display_name: str | None = Field(default=None, max_length=512)
    nick_name: str | None = Field(default=None, max_length=512)
    title: str | None = Field(default=None, max_length=512)
    user_type: str | None = Field(default=None, max_length=512)
    preferred_language: str | None = Field(default=None, max_length=64)
    locale: str | None = Field(default=None, max_length=64)
    timezone: str | None = Field(default=None, max_length=64)
    profile_url: str | None = Field(default=None, max_length=2048)
    name_formatted: str | None = Field(default=None, max_length=512)
    name_family_name: str | None = Field(default=None, max_length=512)
    name_given_name: str | None = Field(default=None, max_length=512)
    name_middle_name: str | None = Field(default=None, max_length=512)
    name_honorific_prefix: str | None = Field(default=None, max_length=128)
    name_honorific_suffix: str | None = Field(default=None, max_length=128)
    employee_number: str | None = Field(default=None, max_length=512)
    cost_center: str | None = Field(default=None, max_length=512)
    organization: str | None = Field(default=None, max_length=512)
    division: str | None = Field(default=None, max_length=512)
    department: str | None = Field(default=None, max_length=512)
    manager_id: str | None = Field(default=None, max_length=512)


class ScimGroup(SQLModel, table=True):
    """A partner's group (RFC 7643 §4.2); members live in ``group_member``."""

    __tablename__ = "scim_group"
    __table_args__ = (
        UniqueConstraint("partner_id", "display_name_ci", name="uq_scim_group_partner_display_name"),
        Index("ix_scim_group_partner_external_id", "partner_id", "external_id"),
        Index("ix_scim_group_partner_pk", "partner_id", "pk"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=36)
    partner_id: str = Field(foreign_key="partner.id", max_length=36, ondelete="CASCADE")
    version: int = Field(default=1)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The SCIM representation without id, meta and members."""
    display_name: str = Field(max_length=512)
    display_name_ci: str = Field(sa_column=Column(folded(512), nullable=False))
    external_id: str | None = Field(default=None, max_length=512)


class ScimValue(SQLModel, table=True):
    """One value of a multi-valued user attribute (emails, phoneNumbers, roles, ...), indexed for filters."""

    __tablename__ = "scim_value"
    __table_args__ = (
        Index("ix_scim_value_lookup", "partner_id", "attribute", "value_ci"),
        Index("ix_scim_value_user", "user_pk"),
        trigram_index("ix_scim_value_value_trgm", "value_ci"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=36)
    user_pk: int = Field(sa_column=Column(ForeignKey("scim_user.pk", ondelete="CASCADE"), nullable=False))
    attribute: str = Field(max_length=32)  #: canonical SCIM name, e.g. "emails"
    value: str | None = Field(default=None, sa_column=Column(String(4096), nullable=True))
    value_ci: str | None = Field(default=None, sa_column=Column(folded(4096), nullable=True))
    type: str | None = Field(default=None, max_length=128)
    primary: bool = Field(default=False)
    display: str | None = Field(default=None, max_length=512)


class GroupMember(SQLModel, table=True):
    """Membership of a user (or nested group) in a group of the same partner."""

    __tablename__ = "group_member"
    __table_args__ = (
        UniqueConstraint("group_pk", "member_id", name="uq_group_member"),
        Index("ix_group_member_member", "partner_id", "member_id"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=36)
    group_pk: int = Field(sa_column=Column(ForeignKey("scim_group.pk", ondelete="CASCADE"), nullable=False))
    member_id: str = Field(max_length=36)
    member_type: str = Field(max_length=8)  #: "User" | "Group"
    display: str | None = Field(default=None, max_length=512)
    """As the client sent it (Entra: "store values as sent"); rendered in its place when absent: the
    member's current displayName, else userName."""
