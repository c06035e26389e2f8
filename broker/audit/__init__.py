"""The append-only audit log: who changed what, when, with before/after digests."""

from broker.audit.log import Actor, AuditRecord, append_audit, digest

__all__ = ["Actor", "AuditRecord", "append_audit", "digest"]
