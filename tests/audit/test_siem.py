"""Streaming the audit log to a SIEM (broker/audit/siem.py): real receivers on 127.0.0.1, both databases.

The webhook receiver verifies every request with the reference ``standardwebhooks`` library (never
with our signing code); the syslog listeners parse RFC 5424 with their own small parser. Every
received record is checked against the log: its leaf hash recomputed from its entry, and its
inclusion proved against a signed checkpoint. Backoff runs on a fake clock, so no test sleeps.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from typer.testing import CliRunner

from broker.audit.checkpoints import make_checkpoint
from broker.audit.log import Actor, append_audit, canonical_json
from broker.audit.merkle import hash_leaf, verify_inclusion
from broker.audit.siem import SiemShipper, cursor_name, siem_status
from broker.audit.siem_base import SiemSink
from broker.audit.siem_webhook import WebhookSink
from broker.audit.syslog import SD_ID, SyslogSink, SyslogTarget
from broker.audit.tree import inclusion_proof, tree_size
from broker.lifecycle.grants import EngineCursor
from broker.settings import Settings
from tests.audit.conftest import Checkpointer, Exporter

SECRET = "whsec_" + base64.b64encode(b"siem-test-secret-0123456789abcdef").decode()


# --- receivers ---------------------------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """A SIEM's webhook endpoint: verifies, then keeps each batch's records; can be down or lose an ack."""

    secret: str
    port: int = 0
    batches: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    fail_next: int = 0
    """Answer 503 to this many coming requests, keeping nothing."""
    lose_ack_next: int = 0
    """Keep this many coming batches but answer 500 (the acknowledgement is lost: a resend follows)."""
    hold: threading.Event | None = None
    """When set to an event, each request waits for it before answering."""
    arrived: threading.Event = field(default_factory=threading.Event)
    """Set by every verified request, as it arrives."""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        verifier = Webhook(self.secret)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    verifier.verify(body, dict(self.headers.items()), json_parse=False)
                except WebhookVerificationError as exc:
                    receiver.refused.append(str(exc))
                    self._answer(401)
                    return
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(10)
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self._answer(503)
                    return
                receiver.batches.append({"id": self.headers["webhook-id"], "body": json.loads(body)})
                if receiver.lose_ack_next:
                    receiver.lose_ack_next -= 1
                    self._answer(500)
                    return
                self._answer(204)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/siem/hooks"

    def records(self) -> list[dict[str, Any]]:
        """Every record received, in arrival order (duplicates included)."""
        return [r for b in self.batches for r in b["body"]["data"]["records"]]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    running = WebhookReceiver(SECRET).start()
    yield running
    if running.hold is not None:
        running.hold.set()
    running.stop()


_SD_PARAM = re.compile(rb'([^ =\]"]+)="((?:[^"\\\]]|\\["\\\]])*)"')


@dataclass(frozen=True)
class SyslogMessage:
    """An RFC 5424 message as a receiver parses it."""

    pri: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd_id: str
    params: dict[str, str]
    msg: bytes

    @classmethod
    def parse(cls, data: bytes) -> SyslogMessage:
        """HEADER SP STRUCTURED-DATA SP MSG (RFC 5424 §6), one SD-ELEMENT expected; escapes undone (§6.3.3)."""
        head = re.match(rb"<(\d{1,3})>(\d) (\S+) (\S+) (\S+) (\S+) (\S+) \[(\S+)", data)
        assert head is not None, data[:120]
        pos, params = head.end(), {}
        while data[pos : pos + 1] == b" ":
            param = _SD_PARAM.match(data, pos + 1)
            assert param is not None, data[pos : pos + 80]
            params[param[1].decode()] = re.sub(rb"\\([\"\\\]])", rb"\1", param[2]).decode()
            pos = param.end()
        assert data[pos : pos + 2] == b"] ", data[pos : pos + 20]
        pri, version, timestamp, hostname, app_name, procid, msgid, sd_id = (g.decode() for g in head.groups())
        return cls(int(pri), int(version), timestamp, hostname, app_name, procid, msgid, sd_id, params, data[pos + 2 :])


@dataclass
class SyslogListener:
    """A syslog receiver on 127.0.0.1: UDP datagrams, or TCP connections of octet-counted frames."""

    transport: str
    messages: list[SyslogMessage] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _sock: socket.socket | None = None

    def start(self) -> SyslogListener:
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        self._sock = socket.socket(socket.AF_INET, kind)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.transport == "udp":
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind(("127.0.0.1", self.port))
        self.port = self._sock.getsockname()[1]
        if self.transport == "tcp":
            self._sock.listen()
        threading.Thread(target=self._serve, args=(self._sock,), daemon=True).start()
        return self

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                if self.transport == "udp":
                    self.messages.append(SyslogMessage.parse(sock.recv(70_000)))
                else:
                    connection, _ = sock.accept()
                    self._read_frames(connection)
        except OSError:
            return  # closed by stop()

    def _read_frames(self, connection: socket.socket) -> None:
        """RFC 6587 §3.4.1: MSG-LEN SP SYSLOG-MSG, until the sender half-closes; then close (the ack)."""
        with connection:
            self.connections += 1
            stream = b""
            while chunk := connection.recv(65536):
                stream += chunk
            while stream:
                length, _, rest = stream.partition(b" ")
                assert length.isdigit(), stream[:40]
                self.messages.append(SyslogMessage.parse(rest[: int(length)]))
                stream = rest[int(length) :]

    def stop(self) -> None:
        if self._sock is not None:
            if self.transport == "tcp":
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None

    @property
    def target(self) -> SyslogTarget:
        return SyslogTarget(self.transport, "127.0.0.1", self.port)  # type: ignore[arg-type]


# --- helpers -----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def append(engine: Engine, count: int, **fields: Any) -> None:
    """``count`` committed audit records (action ``test.siem``)."""
    with Session(engine) as session:
        for n in range(count):
            append_audit(
                session,
                actor=Actor("system", "siem-test"),
                action="test.siem",
                partner_id=None,
                detail={"n": n, "run": uuid.uuid4().hex[:8]},
                **fields,
            )
        session.commit()


def start_at_tail(engine: Engine, sink: SiemSink) -> int:
    """Start a test's sink at the current end of the shared log (not at 0, the whole session's log)."""
    with Session(engine) as session:
        size = tree_size(session)
        session.add(EngineCursor(name=cursor_name(sink), last_event_id=size))
        session.commit()
    return size


def cursor_of(engine: Engine, sink: SiemSink) -> int:
    with Session(engine) as session:
        row = session.get(EngineCursor, cursor_name(sink))
        assert row is not None
        return row.last_event_id


def webhook_sink(receiver: WebhookReceiver) -> WebhookSink:
    return WebhookSink(url=receiver.url, secret=SECRET, timeout=5, name=f"t-{uuid.uuid4().hex[:10]}")


def shipper(engine: Engine, settings: Settings, sink: SiemSink, clock: FakeClock, batch: int = 7) -> SiemShipper:
    return SiemShipper(engine, settings.model_copy(update={"siem_batch_size": batch}), [sink], clock=clock)


def assert_in_log(engine: Engine, leaves: Sequence[tuple[int, dict[str, Any], str]], checkpoint: Checkpointer) -> None:
    """Each (leaf index, entry, base64 leaf hash) is the log's: hash recomputed, inclusion proved at a checkpoint."""
    signed = checkpoint()
    with Session(engine) as session:
        for index, entry, leaf_hash in leaves:
            hashed = base64.b64decode(leaf_hash)
            assert hash_leaf(canonical_json(entry)) == hashed, index
            proof = inclusion_proof(session, leaf_index=index, tree_size=signed.tree_size)
            verify_inclusion(index, signed.tree_size, hashed, proof, signed.root_hash)


def assert_complete(indices: Sequence[int], start: int, end: int) -> None:
    """At least once, in order, no gap: first occurrences are exactly start..end-1, ascending."""
    first = list(dict.fromkeys(indices))
    assert first == list(range(start, end)), (first[:5], start, end)


# --- webhook -----------------------------------------------------------------------------------------


def test_webhook_ships_each_sequenced_record_once_in_order(
    engine: Engine, settings: Settings, receiver: WebhookReceiver, checkpoint: Checkpointer, export: Exporter
) -> None:
    sink, clock = webhook_sink(receiver), FakeClock()
    start = start_at_tail(engine, sink)
    append(engine, 30)
    signed = checkpoint()
    end = signed.tree_size
    ship = shipper(engine, settings, sink, clock)
    try:
        assert ship.run_once() == end - start
        assert receiver.refused == []
        records = receiver.records()
        assert [r["leaf_index"] for r in records] == list(range(start, end))  # each once, in order
        assert len(receiver.batches) == -(-(end - start) // 7)
        first = receiver.batches[0]
        assert first["id"] == f"audit-{start}-{start + 6}"
        assert first["body"]["type"] == "audit.records"
        data = first["body"]["data"]
        assert data["format"] == "entente-audit-export/v1" and data["origin"] == "testserver/audit"
        assert data["tree_size"] == end
        # the export's leaf lines, plus the tree's leaf hash
        exported = [json.loads(line) for line in export(since=start)[1:-1]]
        assert [{k: v for k, v in r.items() if k != "leaf_hash"} for r in records] == exported
        assert_in_log(engine, [(r["leaf_index"], r["entry"], r["leaf_hash"]) for r in records], checkpoint)

        # appended but not sequenced yet: nothing ships until the sequencer gives them leaf indices
        append(engine, 3)
        assert ship.run_once() == 0 and cursor_of(engine, sink) == end
        checkpoint()
        assert ship.run_once() == 3
        assert [r["leaf_index"] for r in receiver.records()] == list(range(start, end + 3))
    finally:
        ship.close()


def test_receiver_down_then_back_loses_nothing(
    engine: Engine, settings: Settings, receiver: WebhookReceiver, checkpoint: Checkpointer
) -> None:
    sink, clock = webhook_sink(receiver), FakeClock()
    start = start_at_tail(engine, sink)
    ship = shipper(engine, settings, sink, clock)
    try:
        receiver.stop()  # down: connection refused
        append(engine, 20)
        end = checkpoint().tree_size
        assert ship.run_once() == 0
        assert "ConnectError" in (ship.last_error(sink) or "")
        assert cursor_of(engine, sink) == start
        with Session(engine) as session:
            (status,) = siem_status(session, sinks=[sink])
        assert status.lag == end - start and status.oldest_unshipped_at is not None

        receiver.start()  # back on the same port, but answering 503 twice
        receiver.fail_next = 2
        assert ship.run_once() == 0  # still backing off: no attempt
        assert receiver.fail_next == 2
        for _ in range(2):
            clock.now += settings.delivery_backoff_max_seconds
            assert ship.run_once() == 0
        assert "503" in (ship.last_error(sink) or "") and receiver.fail_next == 0

        receiver.lose_ack_next = 1  # the next batch arrives, its acknowledgement does not
        clock.now += settings.delivery_backoff_max_seconds
        assert ship.run_once() == 0
        clock.now += settings.delivery_backoff_max_seconds
        assert ship.run_once() == end - start
        assert ship.last_error(sink) is None
        indices = [r["leaf_index"] for r in receiver.records()]
        assert_complete(indices, start, end)
        assert indices[:7] == indices[7:14] == list(range(start, start + 7))  # the resent batch, then the rest
        assert len(indices) == end - start + 7
        assert cursor_of(engine, sink) == end
    finally:
        ship.close()


def test_new_shipper_resumes_from_the_cursor(
    engine: Engine, settings: Settings, receiver: WebhookReceiver, checkpoint: Checkpointer
) -> None:
    sink, clock = webhook_sink(receiver), FakeClock()
    start = start_at_tail(engine, sink)
    append(engine, 10)
    middle = checkpoint().tree_size
    first = shipper(engine, settings, sink, clock)
    assert first.run_once() == middle - start
    first.close()  # the process stops

    append(engine, 5)
    end = checkpoint().tree_size
    again = WebhookSink(url=receiver.url, secret=SECRET, timeout=5, name=sink.name)  # a new process
    second = shipper(engine, settings, again, FakeClock())
    try:
        assert second.run_once() == end - middle
        indices = [r["leaf_index"] for r in receiver.records()]
        assert indices == list(range(start, end))  # nothing sent twice, nothing skipped
    finally:
        second.close()


def test_a_new_sink_starts_at_the_first_leaf(scratch: tuple[Engine, Settings], receiver: WebhookReceiver) -> None:
    engine, settings = scratch
    append(engine, 4)
    with Session(engine) as session:
        make_checkpoint(session, settings, force=True, wait=True)
        size = tree_size(session)
    ship = shipper(engine, settings, webhook_sink(receiver), FakeClock())
    try:
        assert ship.run_once() == size >= 4
        assert [r["leaf_index"] for r in receiver.records()] == list(range(size))
    finally:
        ship.close()


def test_one_shipper_per_sink_at_a_time(
    engine: Engine, settings: Settings, receiver: WebhookReceiver, checkpoint: Checkpointer
) -> None:
    """Two processes' shippers at once: PostgreSQL's row lock makes the second skip; SQLite's compare and
    set keeps the cursor from going back (a duplicate batch is allowed there)."""
    sink, clock = webhook_sink(receiver), FakeClock()
    start = start_at_tail(engine, sink)
    append(engine, 5)
    end = checkpoint().tree_size
    one = shipper(engine, settings, sink, clock)
    two = shipper(engine, settings, WebhookSink(url=receiver.url, secret=SECRET, timeout=5, name=sink.name), clock)
    receiver.hold = threading.Event()
    try:
        thread = threading.Thread(target=one.run_once)
        thread.start()
        assert receiver.arrived.wait(10)  # the first shipper's batch is in flight, held by the receiver
        second = threading.Thread(target=two.run_once)
        second.start()
        if engine.dialect.name == "postgresql":
            second.join(10)
            assert not second.is_alive()  # skipped the locked cursor at once
        receiver.hold.set()
        thread.join(10)
        second.join(10)
        indices = [r["leaf_index"] for r in receiver.records()]
        assert_complete(indices, start, end)
        if engine.dialect.name == "postgresql":
            assert indices == list(range(start, end))
        assert cursor_of(engine, sink) == end
    finally:
        one.close()
        two.close()


# --- syslog ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_syslog_rfc5424_one_message_per_record(
    engine: Engine, settings: Settings, checkpoint: Checkpointer, transport: str
) -> None:
    listener = SyslogListener(transport).start()
    sink = SyslogSink(target=listener.target, timeout=5, name=f"t-{uuid.uuid4().hex[:10]}")
    start = start_at_tail(engine, sink)
    append(engine, 9)
    append(engine, 1, resource_type="User", resource_id='we"ird]\\id é')
    end = checkpoint().tree_size
    ship = shipper(engine, settings, sink, FakeClock(), batch=4)
    try:
        assert ship.run_once() == end - start
        for _ in range(500):  # UDP: the datagrams may still be in the listener's buffer
            if len(listener.messages) >= end - start:
                break
            threading.Event().wait(0.01)
        messages = listener.messages
        assert [int(m.params["leaf_index"]) for m in messages] == list(range(start, end))
        if transport == "tcp":
            assert listener.connections == -(-(end - start) // 4)  # one connection per batch
        leaves = []
        for m in messages:
            assert (m.pri, m.version, m.app_name, m.procid) == (13 * 8 + 5, 1, "entente", "-")
            assert (m.hostname, m.msgid, m.sd_id) == ("testserver", "test.siem", SD_ID)
            assert m.params["origin"] == "testserver/audit" and m.params["actor_kind"] == "system"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", m.timestamp)
            assert m.msg.startswith(b"\xef\xbb\xbf")
            entry = json.loads(m.msg[3:])
            assert canonical_json(entry) == m.msg[3:]  # the MSG is the leaf data itself
            assert entry["occurred_at"].replace("+00:00", "Z") == m.timestamp
            leaves.append((int(m.params["leaf_index"]), entry, m.params["leaf_hash"]))
        assert messages[-1].params["resource_id"] == 'we"ird]\\id é'  # escaped in SD, read back intact
        assert "partner_id" not in messages[0].params  # null values are left out
        assert_in_log(engine, leaves, checkpoint)
    finally:
        ship.close()
        listener.stop()


def test_tcp_syslog_receiver_down_then_back(engine: Engine, settings: Settings, checkpoint: Checkpointer) -> None:
    listener = SyslogListener("tcp").start()
    listener.stop()  # the port is known, nobody listens
    sink = SyslogSink(target=listener.target, timeout=5, name=f"t-{uuid.uuid4().hex[:10]}")
    start = start_at_tail(engine, sink)
    append(engine, 6)
    end = checkpoint().tree_size
    clock = FakeClock()
    ship = shipper(engine, settings, sink, clock, batch=4)
    try:
        assert ship.run_once() == 0
        assert "ConnectionRefused" in (ship.last_error(sink) or "")
        listener.start()
        clock.now += settings.delivery_backoff_max_seconds
        assert ship.run_once() == end - start
        assert [int(m.params["leaf_index"]) for m in listener.messages] == list(range(start, end))
    finally:
        ship.close()
        listener.stop()


# --- configuration and the CLI -----------------------------------------------------------------------


def test_settings_refuse_a_bad_siem_configuration() -> None:
    with pytest.raises(ValidationError, match="set together"):
        Settings(siem_webhook_url="https://siem.example/hooks")
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(siem_webhook_url="https://siem.example/hooks", siem_webhook_secret="not-a-secret")
    for bad in ("http://siem:514", "tcp://siem", "udp://:514", "tcp://siem:514/path"):
        with pytest.raises(ValidationError, match="syslog target"):
            Settings(siem_syslog=bad)
    ok = Settings(
        siem_webhook_url="https://siem.example/hooks", siem_webhook_secret=SECRET, siem_syslog="tcp://[::1]:6514"
    )
    assert str(SyslogTarget.parse(ok.siem_syslog or "")) == "tcp://[::1]:6514"


def test_siem_status_cli(engine: Engine, database_url: str, checkpoint: Checkpointer) -> None:
    from broker.cli import app

    append(engine, 2)
    size = checkpoint().tree_size
    with Session(engine) as session:
        existing = session.get(EngineCursor, "siem-webhook")
        if existing is None:
            session.add(EngineCursor(name="siem-webhook", last_event_id=size - 2))
        else:
            existing.last_event_id = size - 2
            session.add(existing)
        session.commit()
    env = {
        "ENTENTE_DATABASE_URL": database_url,
        "ENTENTE_SIEM_WEBHOOK_URL": "https://user:pw@siem.example/hooks?key=secret",
        "ENTENTE_SIEM_WEBHOOK_SECRET": SECRET,
        "ENTENTE_SIEM_SYSLOG": "tcp://siem.example:6514",
        "COLUMNS": "200",
    }
    done = CliRunner().invoke(app, ["audit", "siem", "status", "--json"], env=env)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    webhook, syslog = report["sinks"]
    assert webhook["target"] == "https://siem.example/hooks"  # no credentials shown
    assert (webhook["sink"], webhook["cursor"], webhook["lag"]) == ("webhook", size - 2, 2)
    assert webhook["tree_size"] == size and webhook["lag_seconds"] >= 0
    assert (syslog["sink"], syslog["target"], syslog["lag"]) == (
        "syslog",
        "tcp://siem.example:6514",
        size - syslog["cursor"],
    )

    table = CliRunner().invoke(app, ["audit", "siem", "status"], env=env)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"tree size {size};")
    assert lines[2].split("\t")[:4] == ["webhook", "https://siem.example/hooks", str(size - 2), "2"]

    off = CliRunner().invoke(app, ["audit", "siem", "status"], env={"ENTENTE_DATABASE_URL": database_url})
    assert off.exit_code == 0 and "no SIEM sink is configured" in off.stdout
