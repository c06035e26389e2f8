"""The narrow interface between the SIEM shipper (``siem``) and each kind of SIEM sink (``siem_webhook``, ``syslog``).

A sink is translation and transport only: it turns a batch of sequenced records into its wire format
and sends it, or raises ``SiemUnavailable``. It keeps no cursor, retries nothing and opens no
database session: the shipper owns order, the cursor and retries.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

__all__ = ["ShippedRecord", "SiemSink"]


@dataclass(frozen=True)
class ShippedRecord:
    """One audit record at its place in the Merkle log: what a sink sends."""

    leaf_index: int
    record_id: int
    entry: dict[str, Any]
    """``broker.audit.log.record_entry``: its canonical JSON is the RFC 9162 leaf data."""
    leaf_hash: bytes
    """The tree's stored leaf hash, SHA-256(0x00 || leaf data) (RFC 9162 §2.1.1): what inclusion proofs use."""
    sequenced_at: dt.datetime

    def export_line(self) -> dict[str, Any]:
        """The record as an ``entente-audit-export/v1`` leaf line, plus ``leaf_hash`` (base64)."""
        return {
            "kind": "leaf",
            "leaf_index": self.leaf_index,
            "record_id": self.record_id,
            "entry": self.entry,
            "leaf_hash": base64.b64encode(self.leaf_hash).decode(),
        }


class SiemSink(Protocol):
    """One configured destination of the audit log."""

    kind: ClassVar[str]
    """``webhook`` | ``syslog``: also the sink's cursor name (``siem-<kind>``) unless ``name`` says otherwise."""
    name: str
    """The cursor key suffix: one cursor per name, so two sinks never share one."""

    def describe(self) -> str:
        """Where the sink sends, for status output and logs (never a secret)."""
        ...

    def send(self, records: Sequence[ShippedRecord], *, origin: str, tree_size: int) -> None:
        """Deliver the records (consecutive leaves, in order) of the log ``origin``, read when the tree had
        ``tree_size`` leaves; or raise ``SiemUnavailable``.

        Returning means the receiver took the whole batch (2xx, or a TCP peer that read to the end);
        a raise means any part of it may be missing, and the shipper sends the batch again.
        """
        ...

    def close(self) -> None:
        """Release connections; the sink may not be used afterwards."""
        ...
