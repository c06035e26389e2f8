"""Every failure of the verifiable audit log, as one tree under ``broker.errors.BrokerError``.

    AuditError                          500  base; never raised on bad input
    ├── VerificationFailed              422  something does not verify: tampering, corruption or a wrong key
    │   ├── LeafMismatch                     a record's content does not hash to its leaf
    │   ├── RootMismatch                     a recomputed root differs from the signed one
    │   ├── InvalidProof                     an RFC 9162 §2.1.3.2 / §2.1.4.2 proof does not verify
    │   ├── BadSignature                     a checkpoint or cosignature signature does not verify
    │   └── MalformedExport                  an export is not what `entente audit export` writes (torn, reordered…)
    ├── OutOfRange                      400  a leaf index or tree size beyond what the log has signed
    ├── NoSuchCheckpoint                404  no checkpoint was signed at that tree size
    ├── UnknownCosigner                 403  the partner has no key registered for that cosignature
    ├── SigningKeyError                 500  the log's signing key is missing, unreadable or invalid
    └── SiemUnavailable                 503  a SIEM sink did not take a batch (retried, never skipped)

The status of ``OutOfRange``, ``NoSuchCheckpoint`` and ``UnknownCosigner`` comes from their second base
(``BadRequest``, ``NotFound``, ``Forbidden``), so the HTTP edge renders them like every other broker error.
"""

from __future__ import annotations

from typing import ClassVar

from broker.errors import BadRequest, BrokerError, Forbidden, NotFound

__all__ = [
    "AuditError",
    "BadSignature",
    "InvalidProof",
    "LeafMismatch",
    "MalformedExport",
    "NoSuchCheckpoint",
    "OutOfRange",
    "RootMismatch",
    "SiemUnavailable",
    "SigningKeyError",
    "UnknownCosigner",
    "VerificationFailed",
]


class AuditError(BrokerError):
    """Base of every audit-log failure."""


class VerificationFailed(AuditError):
    """Evidence does not check out; ``detail`` says what and where."""

    status: ClassVar[int] = 422


class LeafMismatch(VerificationFailed):
    """A record's canonical content does not hash to the leaf (or digest) recorded for it."""


class RootMismatch(VerificationFailed):
    """A root recomputed from leaves differs from the root a checkpoint signs."""


class InvalidProof(VerificationFailed):
    """An inclusion (RFC 9162 §2.1.3.2) or consistency (§2.1.4.2) proof does not verify."""


class BadSignature(VerificationFailed):
    """No trusted signature verifies on a checkpoint, or a cosignature does not verify."""


class MalformedExport(VerificationFailed):
    """An export file is torn, reordered or otherwise not in the format `entente audit export` writes."""


class OutOfRange(AuditError, BadRequest):
    """A leaf index or tree size the log has not reached (or not signed) yet."""


class NoSuchCheckpoint(AuditError, NotFound):
    """No checkpoint was signed at the requested tree size."""


class UnknownCosigner(AuditError, Forbidden):
    """A cosignature names a key the partner has not registered (`entente partner audit-key`)."""


class SigningKeyError(AuditError):
    """The log's Ed25519 signing key cannot be loaded or created."""


class SiemUnavailable(AuditError):
    """A SIEM sink could not be reached or did not accept a batch; the shipper retries the same records.

    ``retry_after`` is the sink's own hint (HTTP ``Retry-After``), in seconds, or ``None``.
    """

    status: ClassVar[int] = 503

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
