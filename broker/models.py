"""Every domain's tables, imported once so SQLModel.metadata is complete for Alembic."""

from broker.audit.log import AuditRecord
from broker.lifecycle.events import LifecycleEvent
from broker.scim.models import GroupMember, ScimGroup, ScimUser, ScimValue
from broker.tenants.models import Partner, PartnerDomain, ScimToken

__all__ = [
    "AuditRecord",
    "GroupMember",
    "LifecycleEvent",
    "Partner",
    "PartnerDomain",
    "ScimGroup",
    "ScimToken",
    "ScimUser",
    "ScimValue",
]
