"""Streaming the audit log to SIEMs: every sequenced record, in leaf order, at least once, none skipped.

Sinks come from settings (``sinks_from_settings``): ``ENTENTE_SIEM_WEBHOOK_URL`` with
``ENTENTE_SIEM_WEBHOOK_SECRET`` (``siem_webhook``, Standard Webhooks batches) and/or
``ENTENTE_SIEM_SYSLOG`` (``syslog``, RFC 5424 over UDP or TCP). Each sink has a cursor, a row
``siem-<name>`` of ``engine_cursor`` whose ``last_event_id`` is the number of leaves it has shipped,
that is the leaf index it ships next; a new sink starts at 0 (the whole log).

One round per sink (``SiemShipper.run_once``, a scheduler job every second): read the next
``siem_batch_size`` leaves from the cursor, up to the tree size (only records the sequencer has
given a leaf index: the order is the log's and can no longer change), send them, and move the
cursor past them only once the sink took the batch. A failure moves nothing: the same records go
again after a full-jitter exponential backoff (``delivery_backoff_seconds`` doubling up to
``delivery_backoff_max_seconds``, never sooner than the sink's ``Retry-After``, itself capped at an
hour), so a sink that was down gets everything it missed, in order, and a batch whose
acknowledgement was lost arrives twice.

One shipper per sink at a time: on PostgreSQL the cursor row is locked (``FOR UPDATE SKIP LOCKED``)
while its batch is in flight, so the other processes running a scheduler skip it. On SQLite a
transaction holds the database's only write lock, so none stays open across a send; the cursor
moves only from the value the batch was read at (compare and set), so a second process on the
same file (``entente serve`` and ``entente worker``) can at worst send a batch twice, never move the
cursor back.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from broker.audit.checkpoints import load_log_key
from broker.audit.errors import SiemUnavailable
from broker.audit.log import AuditRecord, record_entry
from broker.audit.siem_base import ShippedRecord, SiemSink
from broker.audit.siem_webhook import WebhookSink
from broker.audit.syslog import SyslogSink, SyslogTarget
from broker.audit.tree import AuditLeaf, AuditNode, AuditPending, tree_size
from broker.lifecycle.grants import EngineCursor
from broker.settings import Settings
from broker.types import utcnow

__all__ = [
    "CURSOR_PREFIX",
    "SiemShipper",
    "SinkStatus",
    "cursor_name",
    "pending_count",
    "read_batch",
    "siem_status",
    "sinks_from_settings",
]

log = logging.getLogger("entente.audit.siem")

CURSOR_PREFIX = "siem-"
_RUN_LIMIT = 50_000
"""Records one round ships to one sink at most, so a backlog (a new sink on a long log) goes in bounded steps."""
_MAX_RETRY_AFTER = 3600.0
"""A sink's ``Retry-After`` is honoured up to an hour."""
_LEAVES = AuditLeaf.__table__  # type: ignore[attr-defined]
_NODES = AuditNode.__table__  # type: ignore[attr-defined]
_RECORDS = AuditRecord.__table__  # type: ignore[attr-defined]
_PENDING = AuditPending.__table__  # type: ignore[attr-defined]
_CURSORS = EngineCursor.__table__  # type: ignore[attr-defined]


def cursor_name(sink: SiemSink) -> str:
    """The sink's row in ``engine_cursor``."""
    return CURSOR_PREFIX + sink.name


def sinks_from_settings(settings: Settings) -> list[SiemSink]:
    """The configured sinks (none: SIEM streaming is off). Settings validated the values at load."""
    sinks: list[SiemSink] = []
    if settings.siem_webhook_url and settings.siem_webhook_secret:
        sinks.append(
            WebhookSink(
                url=settings.siem_webhook_url,
                secret=settings.siem_webhook_secret.get_secret_value(),
                timeout=settings.delivery_timeout_seconds,
            )
        )
    if settings.siem_syslog:
        sinks.append(
            SyslogSink(target=SyslogTarget.parse(settings.siem_syslog), timeout=settings.delivery_timeout_seconds)
        )
    return sinks


def read_batch(session: Session, *, start: int, end: int, limit: int) -> list[ShippedRecord]:
    """Leaves in [start, end), at most ``limit``, in order, with the tree's stored leaf hashes."""
    query = (
        select(_LEAVES.c.leaf_index, _LEAVES.c.sequenced_at, _NODES.c.hash.label("leaf_hash"), _RECORDS)
        .join(_RECORDS, _RECORDS.c.id == _LEAVES.c.record_id)
        .join(_NODES, _NODES.c.id == _LEAVES.c.leaf_index)  # level 0: a leaf's node key is its index
        .where(_LEAVES.c.leaf_index >= start, _LEAVES.c.leaf_index < end)
        .order_by(_LEAVES.c.leaf_index)
        .limit(limit)
    )
    return [
        ShippedRecord(
            leaf_index=row.leaf_index,
            record_id=row.id,
            entry=record_entry(row),
            leaf_hash=bytes(row.leaf_hash),
            sequenced_at=row.sequenced_at,
        )
        for row in session.connection().execute(query)
    ]


def _claim_cursor(session: Session, name: str) -> int | None:
    """The cursor's value, its row locked for this transaction (made at 0 if missing); ``None`` if another
    process holds it. SQLite: every transaction already holds the database's write lock."""
    query = select(_CURSORS.c.last_event_id).where(_CURSORS.c.name == name)
    if session.connection().dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    value = session.connection().execute(query).scalar()
    if value is not None:
        return int(value)
    exists = session.connection().execute(select(func.count()).select_from(_CURSORS).where(_CURSORS.c.name == name))
    if exists.scalar():
        return None  # locked by another shipper
    try:
        with session.begin_nested():
            session.add(EngineCursor(name=name, last_event_id=0))
    except IntegrityError:
        return None  # another shipper made it just now: its round, not ours
    return 0  # a row this transaction inserted is its own until it commits


def _advance(session: Session, name: str, *, start: int, end: int) -> bool:
    """Move the cursor from ``start`` to ``end`` (compare and set); False if it no longer says ``start``."""
    moved = session.connection().execute(
        update(_CURSORS).where(_CURSORS.c.name == name, _CURSORS.c.last_event_id == start).values(last_event_id=end)
    )
    return moved.rowcount == 1


@dataclass
class _Backoff:
    failures: int = 0
    not_before: float = 0.0
    last_error: str | None = None


class SiemShipper:
    """Ships the log to each sink from its cursor. Not thread-safe: one round at a time per instance."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        sinks: Sequence[SiemSink] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.sinks = list(sinks_from_settings(settings) if sinks is None else sinks)
        self._clock = clock
        self._backoff = {cursor_name(s): _Backoff() for s in self.sinks}
        self._origin: str | None = None

    @property
    def origin(self) -> str:
        """The log's origin (checkpoint key name), named in every batch."""
        if self._origin is None:
            self._origin = load_log_key(self.settings).origin
        return self._origin

    def last_error(self, sink: SiemSink) -> str | None:
        """Why this process's last attempt at the sink failed; ``None`` after a success."""
        return self._backoff[cursor_name(sink)].last_error

    def run_once(self) -> int:
        """One round: each sink not backing off ships what it can; returns the records shipped in all."""
        shipped = 0
        for sink in self.sinks:
            state = self._backoff[cursor_name(sink)]
            if self._clock() < state.not_before:
                continue
            try:
                shipped += self._ship(sink)
            except SiemUnavailable as exc:
                self._failed(sink, state, exc.detail, exc.retry_after)
            except SQLAlchemyError as exc:
                self._failed(sink, state, str(getattr(exc, "orig", None) or exc).splitlines()[0], None)
            else:
                if state.failures:
                    log.info("SIEM sink %s reachable again after %d failed attempts", sink.describe(), state.failures)
                self._backoff[cursor_name(sink)] = _Backoff()
        return shipped

    def _failed(self, sink: SiemSink, state: _Backoff, detail: str, retry_after: float | None) -> None:
        state.failures += 1
        ceiling = min(
            self.settings.delivery_backoff_max_seconds,
            self.settings.delivery_backoff_seconds * (2 ** (state.failures - 1)),
        )
        hint = min(retry_after or 0.0, _MAX_RETRY_AFTER)
        delay = max(hint, random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not a secret
        state.not_before = self._clock() + delay
        state.last_error = detail
        log.warning("audit records not shipped (attempt %d, next in %.1f s): %s", state.failures, delay, detail)

    def _ship(self, sink: SiemSink) -> int:
        """Batches to one sink until it is caught up (or ``_RUN_LIMIT``); raises on the first failure."""
        name, shipped = cursor_name(sink), 0
        while shipped < _RUN_LIMIT:
            with Session(self.engine) as session:
                start = _claim_cursor(session, name)
                if start is None:
                    return shipped  # another process is shipping to this sink
                size = tree_size(session)
                batch = read_batch(session, start=start, end=size, limit=self.settings.siem_batch_size)
                if not batch:
                    session.commit()
                    return shipped
                if batch[0].leaf_index != start or batch[-1].leaf_index != start + len(batch) - 1:
                    raise SiemUnavailable(f"leaves {start}..{size} are not all readable: not shipping past a gap")
                if session.connection().dialect.name == "sqlite":
                    session.commit()  # never hold SQLite's write lock across the network
                sink.send(batch, origin=self.origin, tree_size=size)
                end = start + len(batch)
                if not _advance(session, name, start=start, end=end):
                    session.rollback()
                    log.warning("SIEM cursor %s moved under this shipper (another process?); rereading it", name)
                    return shipped
                session.commit()
            shipped += len(batch)
            log.debug("shipped audit leaves %d..%d to %s", start, end - 1, sink.describe())
        return shipped

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()


@dataclass(frozen=True)
class SinkStatus:
    """Where one sink stands: what it has shipped, and how far behind the log it is."""

    name: str
    """The sink's name (its cursor is ``siem-<name>``)."""
    kind: str
    target: str
    cursor: int
    """Leaves shipped: the leaf index it ships next (0 when it has not started)."""
    tree_size: int
    lag: int
    """Sequenced leaves not yet shipped."""
    oldest_unshipped_at: dt.datetime | None
    """When the first unshipped leaf was sequenced; ``None`` when caught up."""

    @property
    def lag_seconds(self) -> float:
        """How long the oldest unshipped leaf has waited (0 when caught up)."""
        if self.oldest_unshipped_at is None:
            return 0.0
        return max(0.0, (utcnow() - self.oldest_unshipped_at).total_seconds())


def pending_count(session: Session) -> int:
    """Committed records the sequencer has not given a leaf index yet (shipped once it has)."""
    return int(session.connection().execute(select(func.count()).select_from(_PENDING)).scalar() or 0)


def siem_status(session: Session, *, sinks: Sequence[SiemSink]) -> list[SinkStatus]:
    """Each sink's cursor and lag, read (never locked or created) from the database."""
    size = tree_size(session)
    out: list[SinkStatus] = []
    for sink in sinks:
        name = cursor_name(sink)
        value = session.connection().execute(select(_CURSORS.c.last_event_id).where(_CURSORS.c.name == name)).scalar()
        cursor = int(value or 0)
        oldest = None
        if cursor < size:
            oldest = (
                session.connection()
                .execute(select(_LEAVES.c.sequenced_at).where(_LEAVES.c.leaf_index == cursor))
                .scalar()
            )
        out.append(SinkStatus(sink.name, sink.kind, sink.describe(), cursor, size, max(0, size - cursor), oldest))
    return out
