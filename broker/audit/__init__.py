"""The append-only audit log: who changed what, when, with before/after digests.

Every record is a leaf of an RFC 9162 Merkle tree (``tree``) whose signed checkpoints
(``checkpoints``, C2SP notes via ``note``) partners keep and cosign (``cosign``); ``api`` serves
checkpoints and proofs, ``export`` and ``verify`` write and check exports offline, ``merkle`` is the
pure RFC 9162 §2.1 code, ``errors`` the exception tree. Import those modules directly: this package
exports only what every domain needs to write records.
"""

from broker.audit.log import Actor, AuditRecord, append_audit, digest

__all__ = ["Actor", "AuditRecord", "append_audit", "digest"]
