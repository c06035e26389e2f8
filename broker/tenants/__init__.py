"""Partners (tenants): their verified domains and SCIM credentials, and the isolation every query obeys."""

from broker.tenants.models import Partner, PartnerDomain, ScimToken

__all__ = ["Partner", "PartnerDomain", "ScimToken"]
