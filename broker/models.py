"""Every domain's tables, imported once so SQLModel.metadata is complete for Alembic."""

from broker.audit.log import AuditRecord
from broker.lifecycle.events import LifecycleEvent
from broker.lifecycle.grants import AccessGrant, EngineCursor, WorkspaceAccount
from broker.lifecycle.outbox import DeliveryReceipt, DeliveryTask
from broker.policy.store import PolicyVersion
from broker.scim.models import GroupMember, ScimGroup, ScimUser, ScimValue
from broker.sessions.models import LoginSession
from broker.tenants.models import Partner, PartnerDomain, ScimToken
from broker.workspaces.models import Workspace

__all__ = [
    "AccessGrant",
    "AuditRecord",
    "DeliveryReceipt",
    "DeliveryTask",
    "EngineCursor",
    "GroupMember",
    "LifecycleEvent",
    "LoginSession",
    "Partner",
    "PartnerDomain",
    "PolicyVersion",
    "ScimGroup",
    "ScimToken",
    "ScimUser",
    "ScimValue",
    "Workspace",
    "WorkspaceAccount",
]
