"""RFC 5424 syslog SIEM sink: one message per audit record, over UDP (RFC 5426) or TCP (RFC 6587 §3.4.1).

A message (RFC 5424 §6)::

    <109>1 2025-01-01T00:00:00.123456Z entente.example entente - scim.user.created
      [audit@32473 origin="entente.example/audit" leaf_index="17" record_id="17" leaf_hash="<base64>"
       partner_id="…" actor_kind="scim_token" actor_id="…" action="scim.user.created"
       resource_type="User" resource_id="…"] BOM{"action":"scim.user.created",…}

(on one line). PRI is facility 13 "log audit", severity 5 "notice"; TIMESTAMP is the record's
``occurred_at``; HOSTNAME is the host part of the log's origin, the same on every Entente replica;
MSGID is the action (cut at 32 characters). The structured data element ``audit@32473`` (32473 is
the example enterprise number of RFC 5612: Entente has none of its own) indexes the record; the MSG
is a BOM and then the record's **leaf data** (its entry's canonical JSON), so SHA-256(0x00 || MSG
without the BOM) is ``leaf_hash``. Parameters whose value is null are left out; ``"``, ``\\`` and ``]``
in values are escaped (§6.3.3). A UDP message over 65,507 bytes (the largest IPv4 datagram) has its
MSG cut and ``truncated="true"`` added; its record is whole in the webhook sink and the export.

**TCP** frames each message by octet counting (``MSG-LEN SP SYSLOG-MSG``, RFC 6587 §3.4.1) and opens
one connection per batch. After the last frame Entente half-closes (FIN) and waits for the receiver
to close too: a receiver closes once it has read to the end of the stream, so that close is the
acknowledgement of the batch (syslog over TCP has none of its own). A reset, or no close within the
timeout, fails the batch and it is sent again: at least once. **UDP** (RFC 5426) sends one datagram
per message and has no acknowledgement at all: a datagram lost in the network is lost, so UDP suits
a receiver on the same host or network only.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from broker.audit.errors import SiemUnavailable
from broker.audit.log import leaf_data
from broker.audit.siem_base import ShippedRecord

__all__ = ["SD_ID", "SyslogSink", "SyslogTarget", "format_message", "octet_frame"]

FACILITY_LOG_AUDIT = 13
SEVERITY_NOTICE = 5
PRI = FACILITY_LOG_AUDIT * 8 + SEVERITY_NOTICE
APP_NAME = "entente"
SD_ID = "audit@32473"
BOM = b"\xef\xbb\xbf"
UDP_MAX_BYTES = 65_507
"""The largest UDP payload over IPv4 (RFC 5426 §3.2 lets a sender use it; receivers should take 2048+)."""


@dataclass(frozen=True)
class SyslogTarget:
    """Where syslog messages go: ``udp://host:port`` or ``tcp://host:port`` (``[v6]`` in brackets)."""

    transport: Literal["udp", "tcp"]
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> SyslogTarget:
        """ValueError naming what is wrong unless ``text`` is ``udp://host:port`` or ``tcp://host:port``."""
        parts = urlsplit(text.strip())
        if parts.scheme not in ("udp", "tcp"):
            raise ValueError(f"syslog target {text!r}: the scheme is udp:// or tcp://")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"syslog target {text!r}: the port is not a number from 0 to 65535") from exc
        if not parts.hostname or port is None or port == 0:
            raise ValueError(f"syslog target {text!r}: a host and a port are required, as in tcp://siem:6514")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"syslog target {text!r}: only scheme, host and port are allowed")
        return cls("udp" if parts.scheme == "udp" else "tcp", parts.hostname, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


def _header_token(value: str, limit: int) -> str:
    """A HEADER field: PRINTUSASCII (33..126) only, at most ``limit`` characters, ``-`` when empty."""
    token = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return token or "-"


def _param_value(value: str) -> str:
    """RFC 5424 §6.3.3 PARAM-VALUE: ``"``, ``\\`` and ``]`` escaped with a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _timestamp(text: str) -> str:
    """The entry's ISO 8601 ``occurred_at`` as an RFC 5424 §6.2.3 TIMESTAMP (UTC as ``Z``)."""
    return text.replace("+00:00", "Z") if text.endswith("+00:00") else text


def format_message(record: ShippedRecord, *, origin: str, hostname: str, limit: int | None = None) -> bytes:
    """The record's RFC 5424 message (see the module docstring); ``limit`` cuts the MSG to fit that many bytes."""
    entry = record.entry
    actor = entry.get("actor") or [None, None]
    resource = entry.get("resource") or [None, None]
    params: list[tuple[str, object]] = [
        ("origin", origin),
        ("leaf_index", record.leaf_index),
        ("record_id", record.record_id),
        ("leaf_hash", record.export_line()["leaf_hash"]),
        ("partner_id", entry.get("partner_id")),
        ("actor_kind", actor[0]),
        ("actor_id", actor[1]),
        ("action", entry.get("action")),
        ("resource_type", resource[0]),
        ("resource_id", resource[1]),
    ]
    msg = leaf_data(entry)
    header = " ".join(
        (
            f"<{PRI}>1",
            _header_token(_timestamp(str(entry.get("occurred_at") or "")), 64),
            _header_token(hostname, 255),
            APP_NAME,
            "-",
            _header_token(str(entry.get("action") or ""), 32),
        )
    )

    def assemble(extra: str, body: bytes) -> bytes:
        sd = " ".join([SD_ID, *(f'{n}="{_param_value(str(v))}"' for n, v in params if v is not None)]) + extra
        return f"{header} [{sd}] ".encode() + BOM + body

    message = assemble("", msg)
    if limit is not None and len(message) > limit:
        room = limit - len(assemble(' truncated="true"', b""))
        message = assemble(' truncated="true"', msg[: max(0, room)].decode("utf-8", "ignore").encode())
    return message


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message


class SyslogSink:
    """Sends each record as one RFC 5424 message to a UDP or TCP syslog receiver."""

    kind: ClassVar[str] = "syslog"

    def __init__(self, *, target: SyslogTarget, timeout: float, name: str = "syslog") -> None:
        self.name = name
        self.target = target
        self._timeout = timeout

    def describe(self) -> str:
        return str(self.target)

    def send(self, records: Sequence[ShippedRecord], *, origin: str, tree_size: int) -> None:
        """All records, in order, over one connection (TCP) or one socket (UDP); ``SiemUnavailable`` on failure."""
        if not records:
            return
        hostname = origin.split("/", 1)[0]
        doing = f"SIEM syslog {self.target} (leaves {records[0].leaf_index}-{records[-1].leaf_index})"
        try:
            if self.target.transport == "tcp":
                self._send_tcp([octet_frame(format_message(r, origin=origin, hostname=hostname)) for r in records])
            else:
                limit = UDP_MAX_BYTES
                self._send_udp([format_message(r, origin=origin, hostname=hostname, limit=limit) for r in records])
        except OSError as exc:
            raise SiemUnavailable(f"{doing}: {type(exc).__name__}: {exc.strerror or exc}") from exc

    def _send_tcp(self, frames: list[bytes]) -> None:
        """Write every frame, half-close, then wait for the receiver to close: it has read them all."""
        with socket.create_connection((self.target.host, self.target.port), timeout=self._timeout) as sock:
            sock.sendall(b"".join(frames))
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + self._timeout
            while sock.recv(4096):  # a receiver may answer something; only its close matters
                if time.monotonic() > deadline:
                    raise TimeoutError("the receiver did not close the connection after the batch")

    def _send_udp(self, messages: list[bytes]) -> None:
        """One datagram per message from one connected socket (an ICMP "port unreachable" then fails the batch)."""
        family, kind, proto, _, address = socket.getaddrinfo(
            self.target.host, self.target.port, type=socket.SOCK_DGRAM
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(self._timeout)
            sock.connect(address)
            for message in messages:
                sock.send(message)

    def close(self) -> None:
        """Nothing to release: each batch opens and closes its own socket."""
