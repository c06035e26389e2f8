"""Standard Webhooks v1 (https://www.standardwebhooks.com) SIEM sink: batches of audit records, signed.

Signing is the webhook connector's (``connectors.webhook.sign``, HMAC-SHA256 over
``{id}.{timestamp}.{body}`` with the ``whsec_`` secret). One POST per batch, body in the spec's
envelope::

    {"type": "audit.records",
     "timestamp": "2025-01-01T00:00:00Z",
     "data": {"format": "entente-audit-export/v1", "origin": "entente.example/audit", "tree_size": 4213,
              "records": [{"kind": "leaf", "leaf_index": 17, "record_id": 17, "entry": {...},
                           "leaf_hash": "<base64>"}, ...]}}

``records`` are export leaf lines in leaf order with no gap, plus the tree's ``leaf_hash``;
``tree_size`` is the size of the tree when the batch was read (a checkpoint at or above
``leaf_index + 1`` proves each record's inclusion). ``webhook-id`` is ``audit-<first>-<last>`` leaf
index: delivery is at least once, so a receiver deduplicates by ``leaf_index`` (or by that id).
Any 2xx takes the batch; anything else, or no answer, is retried (``Retry-After`` is honoured).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import urlsplit

import httpx

from broker.audit.errors import SiemUnavailable
from broker.audit.siem_base import ShippedRecord
from broker.audit.verify import FORMAT
from connectors.base import parse_retry_after
from connectors.webhook import sign, webhook_hmac_key

__all__ = ["EVENT_TYPE", "WebhookSink"]

EVENT_TYPE = "audit.records"


class WebhookSink:
    """POSTs each batch, signed; a 2xx answer is the receiver's acknowledgement of every record in it."""

    kind: ClassVar[str] = "webhook"

    def __init__(self, *, url: str, secret: str, timeout: float, name: str = "webhook") -> None:
        self.name = name
        self._url = url
        self._key = webhook_hmac_key(secret)
        self._client = httpx.Client(timeout=timeout)

    def describe(self) -> str:
        """The endpoint without user info or query (they may carry credentials)."""
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"

    def body(self, records: Sequence[ShippedRecord], *, origin: str, tree_size: int) -> bytes:
        """The batch's JSON body (see the module docstring)."""
        envelope = {
            "type": EVENT_TYPE,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "data": {
                "format": FORMAT,
                "origin": origin,
                "tree_size": tree_size,
                "records": [r.export_line() for r in records],
            },
        }
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()

    def send(self, records: Sequence[ShippedRecord], *, origin: str, tree_size: int) -> None:
        """One signed POST of the whole batch; ``SiemUnavailable`` unless the answer is 2xx."""
        if not records:
            return
        msg_id = f"audit-{records[0].leaf_index}-{records[-1].leaf_index}"
        body = self.body(records, origin=origin, tree_size=tree_size)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key=self._key, msg_id=msg_id, timestamp=timestamp, body=body),
        }
        doing = f"SIEM webhook {self.describe()} ({msg_id})"
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SiemUnavailable(f"{doing}: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            answer = " ".join(response.text.split())[:200]
            raise SiemUnavailable(
                f"{doing}: answered {response.status_code} {answer}".rstrip(), retry_after=parse_retry_after(response)
            )

    def close(self) -> None:
        self._client.close()
