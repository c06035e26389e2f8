"""The workspace table: one downstream app instance that partner people get access to."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from broker.types import UTCDateTime, utcnow

__all__ = ["OnLeave", "Workspace", "WorkspaceStatus"]


class WorkspaceStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    """Deliveries wait (e.g. its credentials were refused); tasks stay queued, nothing is lost."""


class OnLeave(StrEnum):
    """What losing access means in this workspace: keep the account disabled, or remove it."""

    SUSPEND = "suspend"
    DEPROVISION = "deprovision"


class Workspace(SQLModel, table=True):
    """A connector kind, its sealed config, and the workspace-side groups each role maps to."""

    __tablename__ = "workspace"

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    slug: str = Field(unique=True, max_length=64)
    name: str = Field(max_length=200)
    connector: str = Field(max_length=32)
    """The connector kind (a key of ``connectors.REGISTRY``)."""
    config_public: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The connector config with every secret masked: safe to list and show."""
    config_sealed: str
    """The whole connector config, Fernet-encrypted (broker.workspaces.sealing): secrets never rest in clear."""
    role_groups: dict[str, list[str]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Role -> workspace-side groups, rooms or teams the role brings (``AccountSpec.groups``)."""
    attribute_map: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Workspace attribute name -> SCIM attribute path, for ``AccountSpec.attributes`` (e.g. a GitHub login)."""
    on_leave: str = Field(default=OnLeave.DEPROVISION.value, max_length=16)
    rate_per_second: float = Field(default=20.0)
    """Deliveries per second this process sends to the workspace, below its documented rate limit."""
    status: str = Field(default=WorkspaceStatus.ACTIVE.value, max_length=16)
    status_reason: str | None = Field(default=None, max_length=500)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
