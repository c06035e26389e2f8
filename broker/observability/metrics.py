"""Prometheus metrics: time-to-revoke, deliveries, outbox depth, SCIM requests, logins; the /metrics body.

Families (every label has a bounded set of values: partner slugs, workspace slugs and kinds are made
by operators, outcomes and error classes are fixed by the code):

    entente_time_to_revoke_seconds{workspace_kind, action}     histogram: change accepted -> suspend/deprovision receipt
    entente_deliveries_total{workspace_kind, action, outcome}  counter: changed/unchanged/unsupported, retry, dead
    entente_outbox_tasks{workspace, state}                     gauge, a COUNT at scrape time: pending/running/dead
    entente_outbox_oldest_task_age_seconds{workspace}          gauge, at scrape time: oldest pending or running task
    entente_database_up                                        gauge, at scrape time: 1 when the outbox query worked
    entente_scim_requests_total{partner, method, status}       counter: every /scim request, by the token's partner
    entente_logins_total{partner, outcome, reason}             counter: federated login callbacks

Counters and histograms live in the process; with several ``entente serve`` processes they are kept
in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multi-process mode, set up by
``prepare_multiprocess``) and summed by whichever process answers the scrape.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from broker.lifecycle.outbox import DeliveryTask, TaskAction, TaskState
from broker.types import utcnow
from broker.workspaces.models import Workspace

__all__ = [
    "CONTENT_TYPE",
    "DELIVERIES",
    "LOGINS",
    "SCIM_REQUESTS",
    "TIME_TO_REVOKE",
    "OutboxCollector",
    "multiprocess_dir",
    "observe_login",
    "observe_receipts",
    "observe_scim_request",
    "prepare_multiprocess",
    "render",
]

log = logging.getLogger("entente.metrics")
CONTENT_TYPE = CONTENT_TYPE_LATEST
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_REVOKING = frozenset({TaskAction.SUSPEND.value, TaskAction.DEPROVISION.value})
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

TIME_TO_REVOKE = Histogram(
    "entente_time_to_revoke_seconds",
    "Time from the accepted change (a leaver's event) to the receipt of its suspend or deprovision task.",
    ["workspace_kind", "action"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 14400, 86400),
)
DELIVERIES = Counter(
    "entente_deliveries",
    "Delivery attempts recorded by the worker: a receipt's outcome, or retry / dead for a failed attempt.",
    ["workspace_kind", "action", "outcome"],
)
SCIM_REQUESTS = Counter(
    "entente_scim_requests",
    "SCIM requests answered, by the partner the bearer token belongs to ('none' before authentication).",
    ["partner", "method", "status"],
)
LOGINS = Counter(
    "entente_logins",
    "Federated login callbacks at partner IdP connections; reason is the refusal's error class.",
    ["partner", "outcome", "reason"],
)


@runtime_checkable
class _Receipted(Protocol):
    """A delivered task's result (the worker's ``_Done``): what was done and what came of it."""

    outcome: str
    action: str


@runtime_checkable
class _Failure(Protocol):
    """A failed attempt (the worker's ``_Failed``): ``delay`` is ``None`` when the task is buried."""

    delay: float | None


def observe_receipts(
    results: Iterable[tuple[DeliveryTask, object]],
    workspaces: Mapping[str, Workspace],
    *,
    now: dt.datetime | None = None,
) -> None:
    """Count one recorded delivery round; call after its transaction committed.

    ``results`` are the (task, outcome) pairs the worker recorded: delivered ones (``outcome``,
    ``action``) feed the deliveries counter and, for suspend/deprovision tasks, time-to-revoke
    (``accepted_at`` of the task to now: the receipt's ``done_at``); failed ones (``delay``) count
    as ``retry`` or ``dead``; anything else (a task handed back unattempted) is not an attempt.
    """
    done_at = now or utcnow()
    for task, result in results:
        workspace = workspaces.get(task.workspace_id)
        kind = workspace.connector if workspace is not None else "removed"
        if isinstance(result, _Receipted):
            DELIVERIES.labels(kind, str(result.action), result.outcome).inc()
            if task.action in _REVOKING:
                elapsed = (done_at - task.accepted_at).total_seconds()
                TIME_TO_REVOKE.labels(kind, task.action).observe(max(0.0, elapsed))
        elif isinstance(result, _Failure):
            DELIVERIES.labels(kind, task.action, "retry" if result.delay is not None else "dead").inc()


def observe_scim_request(*, partner: str | None, method: str, status: int) -> None:
    """Count one answered SCIM request; ``partner`` is ``None`` when no token was accepted."""
    SCIM_REQUESTS.labels(partner or "none", method if method in _METHODS else "OTHER", str(status)).inc()


def observe_login(*, connection_id: str, outcome: str, reason: str = "") -> None:
    """Count one login callback at a connection ``<partner slug>.<name>``; ``reason`` names a refusal."""
    LOGINS.labels(connection_id.partition(".")[0], outcome, reason).inc()


class OutboxCollector:
    """Outbox depth per workspace and state, read with one grouped COUNT when Prometheus scrapes.

    A gauge kept by the worker would only know its own process; the table is the one truth every
    process shares. A failed query yields ``entente_database_up 0`` instead of failing the scrape.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _rows(self) -> Sequence[tuple[str, str | None, int, dt.datetime | None]]:
        tasks = DeliveryTask.__table__  # type: ignore[attr-defined]
        workspaces = Workspace.__table__  # type: ignore[attr-defined]
        query = (
            select(workspaces.c.slug, tasks.c.state, func.count(tasks.c.id), func.min(tasks.c.accepted_at))
            .select_from(workspaces.outerjoin(tasks, tasks.c.workspace_id == workspaces.c.id))
            .group_by(workspaces.c.slug, tasks.c.state)
        )
        with self.engine.connect() as connection:
            return [(row[0], row[1], int(row[2]), row[3]) for row in connection.execute(query)]

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("entente_database_up", "1 when the scrape-time outbox query reached the database.")
        try:
            rows = self._rows()
        except SQLAlchemyError as exc:
            log.warning("outbox metrics: database query failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        depth = GaugeMetricFamily(
            "entente_outbox_tasks",
            "Delivery tasks waiting in the outbox, by workspace and state.",
            labels=["workspace", "state"],
        )
        age = GaugeMetricFamily(
            "entente_outbox_oldest_task_age_seconds",
            "Age of the oldest pending or running task of each workspace (0 when none waits).",
            labels=["workspace"],
        )
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, dt.datetime | None] = {}
        for slug, state, count, first in rows:
            per_state = counts.setdefault(slug, {s.value: 0 for s in TaskState})
            oldest.setdefault(slug, None)
            if state is None:
                continue
            per_state[state] = per_state.get(state, 0) + count
            if state != TaskState.DEAD.value and first is not None:
                current = oldest[slug]
                oldest[slug] = first if current is None else min(current, first)
        now = utcnow()
        for slug, per_state in sorted(counts.items()):
            for state, count in sorted(per_state.items()):
                depth.add_metric([slug, state], count)
            first = oldest[slug]
            age.add_metric([slug], max(0.0, (now - first).total_seconds()) if first is not None else 0.0)
        yield up
        yield depth
        yield age


def multiprocess_dir() -> str | None:
    """The multi-process folder when this process runs in prometheus_client's multi-process mode."""
    return os.environ.get(_MULTIPROC_ENV) or None


def render(engine: Engine) -> bytes:
    """The exposition body: this process's (or, in multi-process mode, all processes') metrics plus the outbox."""
    registry = CollectorRegistry(auto_describe=False)
    folder = multiprocess_dir()
    if folder is not None:
        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Default())
    registry.register(OutboxCollector(engine))
    return generate_latest(registry)


class _Default:
    """The process-wide default registry (our families plus process, platform and GC metrics)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def prepare_multiprocess(workers: int) -> str | None:
    """Before `entente serve` starts several processes: give them one empty multi-process folder.

    Keeps an operator's ``PROMETHEUS_MULTIPROC_DIR`` (its ``*.db`` files of a previous run removed:
    they would be summed in) or makes a fresh temporary one. The server processes are spawned, so they see the
    variable before prometheus_client first loads in them. One process needs none of this.
    """
    if workers <= 1:
        return None
    folder = multiprocess_dir()
    if folder is None:
        folder = tempfile.mkdtemp(prefix="entente-metrics-")
    else:
        os.makedirs(folder, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink(missing_ok=True)
    os.environ[_MULTIPROC_ENV] = folder
    return folder
