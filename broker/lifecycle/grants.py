"""Grants (what policies give a person) and workspace accounts (what we last told each workspace).

The engine diffs the policy decision against ``access_grant`` to know what changed, and the worker
keeps ``workspace_account`` in step with what each workspace acknowledged, so a leaver's revocation
targets every account Entente ever made for them, whether or not a grant still names it.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = ["AccessGrant", "AccountState", "EngineCursor", "WorkspaceAccount"]


class AccessGrant(SQLModel, table=True):
    """One person's current access to one workspace, and the rule that made it."""

    __tablename__ = "access_grant"
    __table_args__ = (
        UniqueConstraint("partner_id", "subject_id", "workspace_id", name="uq_access_grant_subject_workspace"),
        Index("ix_access_grant_until", "until"),
        Index("ix_access_grant_workspace", "workspace_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=36, foreign_key="partner.id", ondelete="CASCADE")
    subject_id: str = Field(max_length=36)
    workspace_id: str = Field(max_length=36, foreign_key="workspace.id", ondelete="CASCADE")
    role: str = Field(max_length=64)
    rule_id: str = Field(max_length=128)
    until: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    spec_sha256: str = Field(max_length=64)
    """Digest of the AccountSpec last sent, so an attribute change that alters nothing there sends nothing."""
    granted_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AccountState(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DEPROVISIONED = "deprovisioned"


class WorkspaceAccount(SQLModel, table=True):
    """The account Entente made for a person in a workspace, as that workspace last acknowledged it."""

    __tablename__ = "workspace_account"
    __table_args__ = (
        UniqueConstraint("workspace_id", "partner_id", "subject_id", name="uq_workspace_account_subject"),
    )

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: str = Field(max_length=36, foreign_key="workspace.id", ondelete="CASCADE")
    partner_id: str = Field(max_length=36, foreign_key="partner.id", ondelete="CASCADE")
    subject_id: str = Field(max_length=36)
    remote_id: str | None = Field(default=None, max_length=512)
    state: str = Field(default=AccountState.ACTIVE.value, max_length=16)
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class EngineCursor(SQLModel, table=True):
    """A named cursor, its row the mutex of whoever advances it (locked per run).

    ``lifecycle``: the engine, ``last_event_id`` the highest event id it consumed (informational).
    ``siem-<sink>``: a SIEM sink (broker.audit.siem), ``last_event_id`` the audit leaves it has shipped.
    """

    __tablename__ = "engine_cursor"

    name: str = Field(primary_key=True, max_length=32)
    last_event_id: int = Field(default=0)
