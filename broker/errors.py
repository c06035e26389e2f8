"""One exception tree for the whole broker; protocol codes live on the classes, mapping happens at the edge.

    BrokerError                       500   generic, never raised on bad input
    ├── Unauthorized                  401   missing, malformed, expired or revoked credential
    ├── Forbidden                     403
    ├── NotFound                      404   also every foreign-tenant id (no existence oracle)
    ├── Conflict                      409   scimType uniqueness
    ├── PreconditionFailed            412   If-Match mismatch
    ├── NotModified                   304   If-None-Match matched
    ├── PayloadTooLarge               413   scimType tooMany (Bulk limits)
    ├── NotSupported                  501
    └── BadRequest                    400
        ├── InvalidFilter                   invalidFilter
        ├── InvalidPath                     invalidPath
        ├── InvalidValue                    invalidValue
        │   └── DomainNotVerified           an email or userName outside the partner's verified domains
        ├── InvalidSyntax                   invalidSyntax
        ├── Mutability                      mutability
        ├── NoTarget                        noTarget
        ├── TooMany                         tooMany
        ├── InvalidVersion                  invalidVers
        └── Sensitive                       sensitive

Services raise these; ``broker.scim.api`` renders them as RFC 7644 §3.12 Error bodies and the other
routers as ``{"error", "detail"}``. No service raises ``HTTPException``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadRequest",
    "BrokerError",
    "Conflict",
    "DomainNotVerified",
    "Forbidden",
    "InvalidFilter",
    "InvalidPath",
    "InvalidSyntax",
    "InvalidValue",
    "InvalidVersion",
    "Mutability",
    "NoTarget",
    "NotFound",
    "NotModified",
    "NotSupported",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Sensitive",
    "TooMany",
    "Unauthorized",
]


class BrokerError(Exception):
    """Base of every error Entente raises on purpose; ``detail`` is safe to show the caller."""

    status: ClassVar[int] = 500
    scim_type: ClassVar[str | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(BrokerError):
    status = 401

    def __init__(self, detail: str, *, credentials_sent: bool = True) -> None:
        super().__init__(detail)
        self.credentials_sent = credentials_sent
        """RFC 6750 §3.1: a challenge carries ``error="invalid_token"`` only when a token was sent."""


class Forbidden(BrokerError):
    status = 403


class NotFound(BrokerError):
    status = 404


class Conflict(BrokerError):
    status = 409
    scim_type = "uniqueness"


class PreconditionFailed(BrokerError):
    status = 412


class NotModified(BrokerError):
    status = 304


class PayloadTooLarge(BrokerError):
    status = 413
    scim_type = "tooMany"


class NotSupported(BrokerError):
    status = 501


class BadRequest(BrokerError):
    status = 400


class InvalidFilter(BadRequest):
    scim_type = "invalidFilter"


class InvalidPath(BadRequest):
    scim_type = "invalidPath"


class InvalidValue(BadRequest):
    scim_type = "invalidValue"


class DomainNotVerified(InvalidValue):
    """A user's email or userName lies outside every domain its partner has verified."""


class InvalidSyntax(BadRequest):
    scim_type = "invalidSyntax"


class Mutability(BadRequest):
    scim_type = "mutability"


class NoTarget(BadRequest):
    scim_type = "noTarget"


class TooMany(BadRequest):
    scim_type = "tooMany"


class InvalidVersion(BadRequest):
    scim_type = "invalidVers"


class Sensitive(BadRequest):
    scim_type = "sensitive"
