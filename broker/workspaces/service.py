"""Workspace administration: add, list, look up, and open a workspace's sealed connector config."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr, ValidationError
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.errors import Conflict, InvalidValue, NotFound
from broker.settings import Settings
from broker.workspaces.models import OnLeave, Workspace, WorkspaceStatus
from broker.workspaces.sealing import open_sealed, seal
from connectors import REGISTRY
from connectors.base import ConnectorConfig

__all__ = ["add_workspace", "connector_config", "get_workspace", "list_workspaces", "set_workspace_status"]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _config_class(kind: str) -> type[ConnectorConfig]:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise InvalidValue(f"unknown connector {kind!r}; known: {', '.join(sorted(REGISTRY)) or 'none'}") from None


def _revealed(config: ConnectorConfig) -> dict[str, Any]:
    """The config as JSON with secrets in clear: only ever passed to ``seal``."""
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in config.model_dump(mode="python").items()
    } | {
        name: value
        for name, value in config.model_dump(mode="json").items()
        if not isinstance(getattr(config, name), SecretStr)
    }


def add_workspace(
    session: Session,
    *,
    settings: Settings,
    slug: str,
    name: str | None,
    connector: str,
    values: Mapping[str, str],
    role_groups: Mapping[str, list[str]] | None = None,
    attribute_map: Mapping[str, str] | None = None,
    on_leave: OnLeave = OnLeave.DEPROVISION,
    rate_per_second: float = 20.0,
    actor: Actor,
) -> Workspace:
    """Validate the connector config now (fail at setup, not at the first leaver) and store it sealed."""
    if not _SLUG.match(slug):
        raise InvalidValue(f"workspace slug {slug!r} must be lower-case letters, digits and dashes")
    if session.exec(select(Workspace.id).where(Workspace.slug == slug)).first() is not None:
        raise Conflict(f"workspace {slug!r} already exists")
    if rate_per_second <= 0:
        raise InvalidValue("rate must be positive")
    try:
        config = _config_class(connector).model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        raise InvalidValue(f"{connector} connector: {field}: {first['msg']}") from None
    workspace = Workspace(
        slug=slug,
        name=name or slug,
        connector=connector,
        config_public=config.model_dump(mode="json"),
        config_sealed=seal(settings, _revealed(config)),
        role_groups={role: list(groups) for role, groups in (role_groups or {}).items()},
        attribute_map=dict(attribute_map or {}),
        on_leave=on_leave.value,
        rate_per_second=rate_per_second,
    )
    session.add(workspace)
    append_audit(
        session,
        actor=actor,
        action="workspace.added",
        partner_id=None,
        resource_type="Workspace",
        resource_id=workspace.id,
        after={"slug": slug, "connector": connector, "config": workspace.config_public},
    )
    session.commit()
    return workspace


def get_workspace(session: Session, *, slug: str) -> Workspace:
    workspace = session.exec(select(Workspace).where(Workspace.slug == slug)).first()
    if workspace is None:
        raise NotFound(f"no workspace {slug!r}")
    return workspace


def list_workspaces(session: Session) -> list[Workspace]:
    return list(session.exec(select(Workspace).order_by(col(Workspace.slug))).all())


def set_workspace_status(
    session: Session, *, slug: str, status: WorkspaceStatus, reason: str | None, actor: Actor
) -> Workspace:
    """Pause (deliveries wait, nothing is dropped) or resume a workspace; audited."""
    workspace = get_workspace(session, slug=slug)
    workspace.status, workspace.status_reason = status.value, reason
    session.add(workspace)
    append_audit(
        session,
        actor=actor,
        action=f"workspace.{status.value}",
        partner_id=None,
        resource_type="Workspace",
        resource_id=workspace.id,
        detail={"reason": reason},
    )
    session.commit()
    return workspace


def connector_config(settings: Settings, workspace: Workspace) -> ConnectorConfig:
    """The workspace's typed connector config, unsealed (in memory only)."""
    return _config_class(workspace.connector).model_validate(open_sealed(settings, workspace.config_sealed))
