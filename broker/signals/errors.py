"""The Shared Signals errors; each carries its HTTP status and the ``err`` code of RFC 8935 §2.3 / RFC 8936 §2.4.4.

    BrokerError (broker.errors)
    └── SignalsError                  500  internal_error
        ├── AuthenticationFailed      401  authentication_failed   no, malformed or wrong client credentials
        ├── InvalidRequest            400  invalid_request         a body or parameter SSF does not allow
        ├── StreamNotFound            404  not_found               unknown, or another receiver's (no oracle)
        ├── TooManyStreams            409  conflict                SSF §8.1.1.1: the receiver has its maximum
        └── VerificationTooSoon       429  too_many_requests       SSF §8.1.4.2: within min_verification_interval

Services raise them; ``broker.signals.api`` renders ``{"err", "description"}`` and the CLI prints the
description. Nothing here is an ``HTTPException``.
"""

from __future__ import annotations

from typing import ClassVar

from broker.errors import BrokerError

__all__ = [
    "AuthenticationFailed",
    "InvalidRequest",
    "SignalsError",
    "StreamNotFound",
    "TooManyStreams",
    "VerificationTooSoon",
]


class SignalsError(BrokerError):
    err: ClassVar[str] = "internal_error"


class AuthenticationFailed(SignalsError):
    status = 401
    err = "authentication_failed"


class InvalidRequest(SignalsError):
    status = 400
    err = "invalid_request"


class StreamNotFound(SignalsError):
    status = 404
    err = "not_found"


class TooManyStreams(SignalsError):
    status = 409
    err = "conflict"


class VerificationTooSoon(SignalsError):
    status = 429
    err = "too_many_requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        """Whole seconds until a verification request is accepted again (the ``Retry-After`` header)."""
