"""Every domain's tables, imported once so SQLModel.metadata is complete for Alembic."""

from broker.audit.checkpoints import AuditCheckpoint
from broker.audit.cosign import AuditCosignature, AuditPartnerKey
from broker.audit.log import AuditRecord
from broker.audit.tree import AuditLeaf, AuditNode, AuditPending, AuditTree
from broker.console.models import ConsoleAdmin
from broker.federation.models import IdPConnection
from broker.federation.saml_replay import SamlAssertionUse
from broker.lifecycle.events import LifecycleEvent
from broker.lifecycle.grants import AccessGrant, EngineCursor, WorkspaceAccount
from broker.lifecycle.outbox import DeliveryReceipt, DeliveryTask
from broker.lifecycle.suspensions import Suspension
from broker.policy.store import PolicyVersion
from broker.provider.models import (
    AccessToken,
    AuthorizationCode,
    LogoutNotification,
    OAuthClient,
    RefreshToken,
    SigningKey,
    TokenFamily,
)
from broker.reports.models import ReconcileOrphan
from broker.scim.models import GroupMember, ScimGroup, ScimUser, ScimValue
from broker.sessions.models import LoginSession
from broker.signals.models import SecurityEvent, SignalStream
from broker.tenants.models import Partner, PartnerDomain, ScimToken
from broker.workspaces.models import Workspace

__all__ = [
    "AccessGrant",
    "AccessToken",
    "AuthorizationCode",
    "AuditCheckpoint",
    "AuditCosignature",
    "AuditLeaf",
    "AuditNode",
    "AuditPartnerKey",
    "AuditPending",
    "AuditRecord",
    "AuditTree",
    "ConsoleAdmin",
    "DeliveryReceipt",
    "DeliveryTask",
    "EngineCursor",
    "GroupMember",
    "IdPConnection",
    "LifecycleEvent",
    "LoginSession",
    "LogoutNotification",
    "OAuthClient",
    "Partner",
    "PartnerDomain",
    "PolicyVersion",
    "ReconcileOrphan",
    "RefreshToken",
    "SamlAssertionUse",
    "ScimGroup",
    "ScimToken",
    "ScimUser",
    "ScimValue",
    "SecurityEvent",
    "SigningKey",
    "SignalStream",
    "Suspension",
    "TokenFamily",
    "Workspace",
    "WorkspaceAccount",
]
