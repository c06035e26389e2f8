"""Fault tolerance of the lifecycle engine and the delivery worker, with real processes only (issue 4).

(a) ``kill -9`` of ``entente serve`` at random moments of a 1,000-event fan-out to a real scim2-server,
    restarted on the same database: once the outbox drains, scim2-server holds exactly the people
    the policy grants (SQLite and PostgreSQL).
(b) ``entente serve`` and ``entente worker`` on one PostgreSQL: a slow Standard Webhooks receiver
    never sees one task delivered twice at the same time, every task has exactly one receipt, and
    both processes delivered.
(c) The receiver is stopped while leavers, movers and profile changes are pushed: their tasks wait
    (pending, retried, with the error) and none dies; started again on the same port, it receives
    everything, per person in the order the engine enqueued it.

Two in-process regressions on PostgreSQL pin the engine bugs (a) and (b) surfaced: an event that
commits after a later one was consumed is still consumed, and two engines making the mutex row at
once do not fail.

Everything goes through the console scripts and HTTP, as an IdP and an operator would; the tests
read the database only to know when the outbox is empty and what the receipts and audit say. Timing is never
asserted by sleeping: every wait polls towards a generous deadline (the suite runs on busy 2-core
machines).
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from broker.audit.log import Actor
from broker.db import create_db_engine, migrate
from broker.lifecycle.engine import process_events
from broker.lifecycle.events import EventKind, record_event
from broker.lifecycle.grants import EngineCursor
from broker.settings import Settings
from broker.tenants.models import DomainPolicy
from broker.tenants.service import add_partner
from tests.conftest import GROUP_SCHEMA, PATCH_SCHEMA, USER_SCHEMA
from tests.lifecycle.helpers import run_engine
from tests.peers.entente_fleet import (
    EntenteNode,
    entente_env,
    fresh_database,
    fresh_scim2_server,
    rows,
    scalar,
)
from tests.peers.entente_process import stop_process
from tests.peers.scim2_server_process import Scim2Server
from tests.peers.webhook_receiver import WebhookReceiver, read_records, start_webhook_receiver

pytestmark = pytest.mark.peer

WRITE_DEADLINE = 120.0
"""How long one SCIM write may keep failing (Entente down, restarting) before the test gives up."""
DRAIN_DEADLINE = 120.0
"""How long the outbox may take to empty once the writes are in."""


# -- an IdP that retries until Entente accepts ------------------------------------------------------
class Idp:
    """A SCIM client that, like an IdP, retries a write until Entente accepts it (2xx).

    A write whose connection failed may have been committed before the process died: a retried
    POST /Users then answers 409 and the user is looked up by userName; every other write here is
    idempotent (PATCH to a state, member add/remove), so repeating it changes nothing.
    """

    def __init__(self, base_url: str, token: str, domain: str) -> None:
        self.domain = domain
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
            timeout=30.0,
        )
        self.refused = 0
        """Attempts that failed in transport (process down or killed mid-request)."""
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        deadline = time.monotonic() + WRITE_DEADLINE
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.http.request(method, path, json=body)
            except httpx.TransportError as exc:
                with self._lock:
                    self.refused += 1
                last = repr(exc)
            else:
                if response.is_success or (response.status_code == 409 and attempt > 1):
                    return response
                if response.status_code not in (429, 503):
                    pytest.fail(f"{method} {path} answered {response.status_code}: {response.text}")
                last = f"HTTP {response.status_code}"
            if time.monotonic() > deadline:
                pytest.fail(f"{method} {path} not accepted within {WRITE_DEADLINE:.0f}s: {last}")
            time.sleep(0.05)

    def email(self, local: str) -> str:
        return f"{local}@{self.domain}"

    def create_user(self, local: str, display_name: str | None = None) -> str:
        body = {
            "schemas": [USER_SCHEMA],
            "userName": self.email(local),
            "displayName": display_name or f"Person {local}",
            "emails": [{"value": self.email(local), "type": "work", "primary": True}],
            "active": True,
        }
        response = self._send("POST", "/Users", body)
        if response.status_code == 201:
            return str(response.json()["id"])
        return self._find_user(local)  # 409 on a retry: the first attempt was committed before the process died

    def _find(self, endpoint: str, filter_: str) -> str:
        """The id of the one resource matching ``filter_``, asked until Entente answers."""
        deadline = time.monotonic() + WRITE_DEADLINE
        while time.monotonic() < deadline:
            try:
                response = self.http.get(endpoint, params={"filter": filter_})
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                [found] = response.json()["Resources"]
                return str(found["id"])
            time.sleep(0.05)
        pytest.fail(f"GET {endpoint}?filter={filter_} not answered within {WRITE_DEADLINE:.0f}s")

    def _find_user(self, local: str) -> str:
        return self._find("/Users", f'userName eq "{self.email(local)}"')

    def create_group(self, name: str) -> str:
        body = {"schemas": [GROUP_SCHEMA], "displayName": name}
        response = self._send("POST", "/Groups", body)
        if response.status_code == 201:
            return str(response.json()["id"])
        return self._find("/Groups", f'displayName eq "{name}"')

    def patch_user(self, user_id: str, operations: list[dict[str, Any]]) -> None:
        self._send("PATCH", f"/Users/{user_id}", {"schemas": [PATCH_SCHEMA], "Operations": operations})

    def set_active(self, user_id: str, active: bool) -> None:
        self.patch_user(user_id, [{"op": "replace", "path": "active", "value": active}])

    def add_members(self, group_id: str, user_ids: list[str]) -> None:
        operation = {"op": "add", "path": "members", "value": [{"value": u} for u in user_ids]}
        self._send("PATCH", f"/Groups/{group_id}", {"schemas": [PATCH_SCHEMA], "Operations": [operation]})

    def remove_members(self, group_id: str, user_ids: list[str]) -> None:
        operation = {"op": "remove", "path": "members", "value": [{"value": u} for u in user_ids]}
        self._send("PATCH", f"/Groups/{group_id}", {"schemas": [PATCH_SCHEMA], "Operations": [operation]})


# -- set-up through the CLI -------------------------------------------------------------------------
def _policy(workdir: Path, slug: str, workspace: str) -> Path:
    path = workdir / f"policy-{workspace}.yaml"
    path.write_text(
        f"- id: eng-{workspace}\n"
        f"  tenant: {slug}\n"
        "  when: { groups_any: [eng] }\n"
        f"  grant: [{{ workspace: {workspace}, role: member }}]\n"
    )
    return path


def _set_up(node: EntenteNode, workdir: Path, connector: str, settings: dict[str, str]) -> tuple[Idp, str]:
    """A warn-only partner with a token, a workspace, and a policy granting group ``eng`` to it.

    The three are made at the same time (each CLI call is a Python start-up); returns an IdP client
    of the partner and the workspace slug.
    """
    slug = f"faults-{uuid.uuid4().hex[:8]}"
    domain = f"{slug}.test"
    workspace = f"ws-{uuid.uuid4().hex[:8]}"

    def partner() -> str:
        node.cli("partner", "add", slug, "--name", f"Faults {slug}", "--domain", domain, "--warn-only")
        out = node.cli("partner", "token", slug, "--expires", "1d", "--label", "fault tests")
        return [line.strip() for line in out.splitlines() if line.strip()][-1]

    def add_workspace() -> None:
        options = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
        node.cli("workspace", "add", workspace, "--connector", connector, *options, "--rate", "1000")

    def apply_policy() -> None:  # the policy names the partner and the workspace; neither must exist yet
        node.cli("policy", "apply", str(_policy(workdir, slug, workspace)))

    with ThreadPoolExecutor(3) as pool:
        token_future = pool.submit(partner)
        for done in [pool.submit(add_workspace), pool.submit(apply_policy)]:
            done.result()
        token = token_future.result()
    assert token.startswith("ent_scim_"), token
    return Idp(node.base_url, token, domain), workspace


# -- reading the outcome ----------------------------------------------------------------------------
def _backlog(database_url: str) -> tuple[int, int, int]:
    """(unconsumed lifecycle events, tasks waiting or running, dead tasks)."""
    [(events, waiting, dead)] = rows(
        database_url,
        "SELECT (SELECT count(*) FROM lifecycle_event WHERE NOT consumed),"
        " (SELECT count(*) FROM delivery_task WHERE state <> 'dead'),"
        " (SELECT count(*) FROM delivery_task WHERE state = 'dead')",
    )
    return int(events), int(waiting), int(dead)


def _wait_until(what: str, check: Callable[[], bool], *, deadline: float, diagnose: Callable[[], str]) -> float:
    """Poll ``check`` until it holds; seconds it took, or a failure saying what was still missing."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > deadline:
            pytest.fail(f"{what} not reached within {deadline:.0f}s\n{diagnose()}")
        time.sleep(0.2)
    return time.monotonic() - started


def _wait_drained(database_url: str, nodes: list[EntenteNode], *, deadline: float = DRAIN_DEADLINE) -> float:
    def check() -> bool:
        for node in nodes:
            node.assert_alive()
        events, waiting, dead = _backlog(database_url)
        assert dead == 0, rows(database_url, "SELECT id, action, attempts, last_error FROM delivery_task")
        return events == 0 and waiting == 0

    def diagnose() -> str:
        tasks = rows(database_url, "SELECT id, action, state, attempts, last_error FROM delivery_task ORDER BY id")
        logs = "\n".join(f"--- {n.name} ---\n{n.log()[-4000:]}" for n in nodes)
        return f"backlog (events, waiting, dead) = {_backlog(database_url)}; tasks: {tasks[:20]}\n{logs}"

    return _wait_until("an empty outbox", check, deadline=deadline, diagnose=diagnose)


def _assert_clean_logs(*nodes: EntenteNode) -> None:
    for node in nodes:
        log = node.log()
        assert "Traceback (most recent call last)" not in log, f"entente {node.name} logged an error:\n{log}"


def _scim_users(server: Scim2Server) -> list[dict[str, Any]]:
    """Every User scim2-server holds, paged through."""
    found: list[dict[str, Any]] = []
    with httpx.Client(headers={"Authorization": f"Bearer {server.token}"}, timeout=30.0) as http:
        while True:
            page = http.get(f"{server.base_url}/Users", params={"startIndex": len(found) + 1, "count": 500})
            page.raise_for_status()
            resources = page.json().get("Resources", [])
            found += resources
            if not resources or len(found) >= page.json()["totalResults"]:
                return found


# -- (a) kill -9 during a 1,000-event fan-out -------------------------------------------------------
class Killer:
    """Kills the node at chosen points of the IdP's progress and starts it again at once."""

    def __init__(self, node: EntenteNode, rng: random.Random, thresholds: list[int]) -> None:
        self.node = node
        self.rng = rng
        self.thresholds = sorted(thresholds)
        self.progress = 0
        self.kill_log: list[str] = []
        self._lock = threading.Lock()
        self._next = threading.Event()
        self._done = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="killer", daemon=True)

    def step(self) -> None:
        with self._lock:
            self.progress += 1
            if self.thresholds and self.progress >= self.thresholds[0]:
                self._next.set()

    def kill_now(self, why: str) -> None:
        time.sleep(self.rng.uniform(0.0, 0.3))
        self.node.kill()
        self.kill_log.append(why)
        self.node.start()

    def _run(self) -> None:
        try:
            while self.thresholds and not self._done.is_set():
                if not self._next.wait(0.1):
                    continue
                with self._lock:
                    self._next.clear()
                    threshold = self.thresholds.pop(0)
                self.kill_now(f"after write {threshold}")
        except BaseException as exc:  # reported by the test thread
            self.failure = exc

    def finish(self) -> None:
        self._done.set()
        self.thread.join()
        if self.failure is not None:
            raise self.failure


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_during_a_fan_out_loses_nothing(backend: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("FAULTS_SEED") or random.randrange(2**32))  # FAULTS_SEED=N replays a run
    rng = random.Random(seed)
    started = time.monotonic()
    with (
        fresh_database(backend, tmp_path) as database_url,
        fresh_scim2_server(tmp_path) as downstream,
    ):
        env = entente_env(
            database_url,
            delivery_lease_seconds=2,
            delivery_batch_size=20,  # scim2-server (wsgiref, listen backlog 5) resets connections beyond that
            delivery_backoff_seconds=0.2,
            delivery_backoff_max_seconds=2,
            delivery_poll_seconds=0.2,
            delivery_max_attempts=1000,
        )
        node = EntenteNode(env=env, workdir=tmp_path)
        node.start()
        try:
            idp, _workspace = _set_up(
                node, tmp_path, "scim", {"base_url": downstream.base_url, "token": downstream.token}
            )
            try:
                expected, events = _fan_out(idp, node, rng, database_url)
            finally:
                idp.close()
            drained = _wait_drained(database_url, [node])
            remote = _scim_users(downstream)
            by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for user in remote:
                by_subject[str(user.get("externalId"))].append(user)
            context = f"seed {seed}, kills {node.kills}, log {node.log_path}"
            assert set(by_subject) == expected, (
                f"{context}: missing {len(expected - set(by_subject))}, unexpected {len(set(by_subject) - expected)}"
            )
            assert all(len(users) == 1 for users in by_subject.values()), f"{context}: a person has two accounts"
            assert all(users[0]["active"] is True for users in by_subject.values()), context
            assert scalar(database_url, "SELECT count(*) FROM lifecycle_event") == events, (
                f"{context}: a retried write must not record its events twice"
            )
            assert node.kills >= 2, context
            _assert_clean_logs(node)
            repeated = scalar(database_url, "SELECT count(*) FROM delivery_receipt WHERE attempts > 1")
        finally:
            node.stop()
    print(
        f"\n[{backend}] seed {seed}: {events} events, {len(expected)} provisioned, kills {node.kills} "
        f"({idp.refused} refused attempts, {repeated} tasks delivered again after a kill), "
        f"drained {drained:.1f}s after the last write, "
        f"total {time.monotonic() - started:.1f}s"
    )


JOINERS = 400
LEAVERS = 100
MOVERS = 60
REJOINERS = 40
WRITERS = 4


def _fan_out(idp: Idp, node: EntenteNode, rng: random.Random, database_url: str) -> tuple[set[str], int]:
    """Push the joiners, leavers, movers and rejoiners while the node is killed at random moments.

    Returns the Entente ids of the people who must end up provisioned, and how many lifecycle
    events the accepted writes record (1 group + 400 joined + 400 added + 100 left + 60 removed +
    40 rejoined).
    """
    eng = idp.create_group("eng")
    chunks = [[f"u{n:04d}" for n in range(start, start + 10)] for start in range(0, JOINERS, 10)]
    writes = JOINERS + len(chunks) + LEAVERS + MOVERS + REJOINERS
    killer = Killer(node, rng, [round(writes * rng.uniform(0.1, 0.9)) for _ in range(2)])
    killer.thread.start()
    ids: dict[str, str] = {}
    lock = threading.Lock()

    def join(chunk: list[str]) -> None:
        made = []
        for local in chunk:
            made.append(idp.create_user(local))
            killer.step()
        with lock:
            ids.update(zip(chunk, made, strict=True))
        idp.add_members(eng, made)
        killer.step()

    def run(work: Callable[[Any], None], items: list[Any]) -> None:
        with ThreadPoolExecutor(WRITERS) as pool:
            for future in [pool.submit(work, item) for item in items]:
                future.result()

    try:
        run(join, chunks)
        people = [ids[local] for local in sorted(ids)]
        rng.shuffle(people)
        leavers, movers = people[:LEAVERS], people[LEAVERS : LEAVERS + MOVERS]
        rejoiners = rng.sample(leavers, REJOINERS)

        def leave_or_move(item: tuple[str, str]) -> None:
            kind, user_id = item
            if kind == "leave":
                idp.set_active(user_id, False)
            else:
                idp.remove_members(eng, [user_id])
            killer.step()

        mixed = [("leave", u) for u in leavers] + [("move", u) for u in movers]
        rng.shuffle(mixed)
        run(leave_or_move, mixed)

        def rejoin(user_id: str) -> None:
            idp.set_active(user_id, True)
            killer.step()

        run(rejoin, rejoiners)
    finally:
        killer.finish()
    # one more kill while the worker is still delivering, if it is
    if _backlog(database_url)[1] > 0:
        killer.kill_now("while draining")
    expected = set(people) - set(leavers) - set(movers) | set(rejoiners)
    assert len(expected) == JOINERS - LEAVERS - MOVERS + REJOINERS
    return expected, 1 + 2 * JOINERS + LEAVERS + MOVERS + REJOINERS


# -- (b) two processes on one PostgreSQL ------------------------------------------------------------
def _webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _detail(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def _assert_per_subject_order(records: list[dict[str, Any]]) -> None:
    """Per person, deliveries never overlap and follow task ids: task n+1 starts after task n ended."""
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_subject[record["subject_id"]].append(record)
    for subject, seen in by_subject.items():
        seen.sort(key=lambda r: r["start"])
        for before, after in zip(seen, seen[1:], strict=False):
            assert int(before["id"]) < int(after["id"]), f"{subject}: task {after['id']} ran before {before['id']}"
            assert after["start"] >= before["end"], f"{subject}: task {after['id']} started before {before['id']} ended"


def test_two_processes_never_deliver_one_task_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    secret = _webhook_secret()
    record = tmp_path / "deliveries.jsonl"
    receiver = start_webhook_receiver(secret=secret, workdir=tmp_path, delay=0.05, record_file=record)
    try:
        with fresh_database("postgresql", tmp_path) as database_url:
            env = entente_env(
                database_url,
                delivery_batch_size=5,
                delivery_poll_seconds=0.1,
                delivery_backoff_seconds=0.2,
                delivery_backoff_max_seconds=2,
            )
            serve = EntenteNode(env=env, workdir=tmp_path, name="serve")
            worker = EntenteNode(env=env, workdir=tmp_path, command="worker", name="worker")
            serve.cli("migrate")  # once: then both start together, and race for the engine's first run
            for node in (serve, worker):
                node.launch()
            try:
                for node in (serve, worker):
                    node.wait_ready()
                _two_processes(serve, worker, receiver, tmp_path, database_url)
            finally:
                worker.stop()
                serve.stop()
    finally:
        died = stop_process(receiver.process)
    assert died is None, receiver.log()
    print(f"\n[postgresql] two processes: {time.monotonic() - started:.1f}s")


def _two_processes(
    serve: EntenteNode, worker: EntenteNode, receiver: WebhookReceiver, workdir: Path, database_url: str
) -> None:
    idp, _ = _set_up(serve, workdir, "webhook", {"url": receiver.hooks_url, "secret": receiver.secret})
    try:
        eng = idp.create_group("eng")
        with ThreadPoolExecutor(WRITERS) as pool:  # concurrent writes: events commit out of id order
            people = list(pool.map(idp.create_user, [f"p{n:03d}" for n in range(120)]))
        for start in range(0, len(people), 20):
            idp.add_members(eng, people[start : start + 20])
        # the 120 grants are decided (and their updates queued) before anyone leaves, so that no
        # join and leave of one person fold into nothing
        _wait_until(
            "the joiners' events consumed",
            lambda: _backlog(database_url)[0] == 0,
            deadline=DRAIN_DEADLINE,
            diagnose=lambda: str(_backlog(database_url)),
        )
        for user_id in people[:45]:
            idp.set_active(user_id, False)
        for start in range(45, 90, 15):
            idp.remove_members(eng, people[start : start + 15])
    finally:
        idp.close()
    _wait_drained(database_url, [serve, worker])
    assert receiver.record_path is not None
    records = read_records(receiver.record_path)
    receipts = rows(database_url, "SELECT task_id, subject_id, action FROM delivery_receipt ORDER BY task_id")
    task_ids = [str(task_id) for task_id, _, _ in receipts]
    assert len(task_ids) == 120 + 90 * 2
    assert len(set(task_ids)) == len(task_ids), "a task has two receipts"

    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in records:
        by_id[line["id"]].append(line)
    for msg_id, seen in by_id.items():
        seen.sort(key=lambda r: r["start"])
        for before, after in zip(seen, seen[1:], strict=False):
            assert after["start"] >= before["end"], f"task {msg_id} was delivered twice at the same time: {seen}"
    assert set(by_id) == set(task_ids), "every task reached the receiver, and nothing else did"
    twice = {msg_id: seen for msg_id, seen in by_id.items() if len(seen) > 1}
    assert not twice, f"tasks delivered more than once without any failure: {twice}"
    _assert_per_subject_order(records)

    pids = {
        _detail(detail).get("worker_pid")
        for (detail,) in rows(
            database_url,
            "SELECT detail FROM audit_record WHERE actor_id = 'delivery-worker' AND action LIKE 'delivery.%'",
        )
    }
    assert pids == {serve.pids[-1], worker.pids[-1]}, f"deliveries by {pids}: both processes must have worked"
    _assert_clean_logs(serve, worker)


# -- (c) the downstream is down for a while ---------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_stopped_receiver_gets_everything_in_order_once_back(backend: str, tmp_path: Path) -> None:
    started = time.monotonic()
    secret = _webhook_secret()
    state, record = tmp_path / "receiver-state.json", tmp_path / "deliveries.jsonl"

    def receiver_on(port: int | None) -> WebhookReceiver:
        return start_webhook_receiver(secret=secret, workdir=tmp_path, port=port, state_file=state, record_file=record)

    receiver = receiver_on(None)
    try:
        with fresh_database(backend, tmp_path) as database_url:
            env = entente_env(
                database_url,
                delivery_backoff_seconds=0.2,
                delivery_backoff_max_seconds=1,
                delivery_poll_seconds=0.2,
                delivery_max_attempts=1000,
            )
            node = EntenteNode(env=env, workdir=tmp_path)
            node.start()
            try:
                receiver = _downstream_down(node, receiver, receiver_on, tmp_path, database_url, state)
            finally:
                node.stop()
    finally:
        died = stop_process(receiver.process)
    assert died is None, receiver.log()
    print(f"\n[{backend}] receiver down and back: {time.monotonic() - started:.1f}s")


def _downstream_down(
    node: EntenteNode,
    receiver: WebhookReceiver,
    receiver_on: Callable[[int | None], WebhookReceiver],
    workdir: Path,
    database_url: str,
    state: Path,
) -> WebhookReceiver:
    idp, workspace = _set_up(node, workdir, "webhook", {"url": receiver.hooks_url, "secret": receiver.secret})

    def accounts() -> dict[str, dict[str, Any]]:
        return json.loads(state.read_text())["accounts"] if state.exists() else {}

    try:
        eng = idp.create_group("eng")
        people = [idp.create_user(f"p{n:02d}") for n in range(30)]
        idp.add_members(eng, people)
        _wait_drained(database_url, [node])
        assert set(accounts()) == set(people)
        first_receipt = int(scalar(database_url, "SELECT max(id) FROM delivery_receipt"))

        assert stop_process(receiver.process) is None, receiver.log()
        leavers, movers, renamed = people[:10], people[10:20], people[20:25]
        for user_id in leavers:
            idp.set_active(user_id, False)
        idp.remove_members(eng, movers)
        for user_id in renamed:
            idp.patch_user(user_id, [{"op": "replace", "path": "displayName", "value": f"Renamed {user_id[:8]}"}])
        joiners = [idp.create_user(f"late{n}") for n in range(5)]
        idp.add_members(eng, joiners)
    finally:
        idp.close()

    # every change is queued, retried against the closed port, and nothing is buried
    queued = 2 * len(leavers) + 2 * len(movers) + len(renamed) + len(joiners)

    def retried() -> bool:
        tasks = rows(database_url, "SELECT subject_id, state, attempts, last_error FROM delivery_task ORDER BY id")
        assert all(state_ != "dead" for _, state_, _, _ in tasks), tasks
        heads: dict[str, tuple[str, int, str | None]] = {}
        for subject, state_, attempts, error in tasks:
            heads.setdefault(subject, (state_, attempts, error))
        return (
            _backlog(database_url)[0] == 0
            and len(tasks) == queued
            and all(attempts >= 3 and error for _, attempts, error in heads.values())
        )

    _wait_until(
        "every waiting person's first task retried three times",
        retried,
        deadline=DRAIN_DEADLINE,
        diagnose=lambda: str(rows(database_url, "SELECT id, state, attempts, last_error FROM delivery_task")),
    )
    status = json.loads(node.cli("workspace", "status", workspace, "--json"))
    assert status["dead"] == 0 and status["pending"] + status["running"] == queued, status
    assert status["last_error"] and "ConnectError" in status["last_error"], status
    assert scalar(database_url, "SELECT max(id) FROM delivery_receipt") == first_receipt, "nothing was delivered"

    receiver = receiver_on(receiver.port)  # the same port, the same state file
    _wait_drained(database_url, [node])

    remaining = set(people) - set(leavers) - set(movers) | set(joiners)
    assert set(accounts()) == remaining
    assert all(account["active"] for account in accounts().values())
    for user_id in renamed:
        assert accounts()[user_id]["display_name"] == f"Renamed {user_id[:8]}"

    # per person, the receiver saw the actions in the order the engine enqueued them
    receipts = rows(
        database_url,
        "SELECT task_id, subject_id, action FROM delivery_receipt WHERE id > :first ORDER BY task_id",
        first=first_receipt,
    )
    assert len(receipts) == queued
    event_type = {
        "update": "account.updated",
        "revoke_sessions": "account.sessions_revoked",
        "suspend": "account.suspended",
        "deprovision": "account.deprovisioned",
    }
    enqueued: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for task_id, subject_id, action in receipts:
        enqueued[subject_id].append((str(task_id), event_type[action]))
    assert receiver.record_path is not None
    applied: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line in read_records(receiver.record_path):
        if not line["replay"] and line["subject_id"] in enqueued:
            applied[line["subject_id"]].append((line["id"], line["type"]))
    for subject_id, sequence in enqueued.items():
        assert applied[subject_id][-len(sequence) :] == sequence, subject_id
    assert enqueued[leavers[0]] and [t for _, t in enqueued[leavers[0]]] == [
        "account.sessions_revoked",
        "account.deprovisioned",
    ]
    _assert_per_subject_order(read_records(receiver.record_path))
    _assert_clean_logs(node)
    return receiver


# -- the engine never skips an event that commits late ----------------------------------------------
def test_an_event_committed_after_a_later_one_is_still_consumed(tmp_path: Path) -> None:
    """PostgreSQL hands out ids before commit, so concurrent SCIM writes commit events out of id order.

    Found by the kill -9 test on PostgreSQL: the engine read ``id > last consumed id``, so an event
    whose transaction committed after a later one had been consumed was never turned into tasks.
    (SQLite writers are serialized by BEGIN IMMEDIATE: ids commit in order there.)
    """
    with fresh_database("postgresql", tmp_path) as database_url:
        settings = Settings(database_url=database_url, database_pool_size=2)
        migrate(settings)
        engine = create_db_engine(settings)
        try:
            with Session(engine) as session:
                slug = f"late-{uuid.uuid4().hex[:8]}"
                partner = add_partner(
                    session=session,
                    slug=slug,
                    name=slug,
                    domains=[f"{slug}.test"],
                    actor=Actor("cli", "tests"),
                    domain_policy=DomainPolicy.ENFORCE,
                )
                partner_id = partner.id

            def event(session: Session, subject_id: str) -> None:
                record_event(
                    session, partner_id=partner_id, kind=EventKind.UPDATED, subject_type="user", subject_id=subject_id
                )

            with Session(engine) as early, Session(engine) as late:
                event(early, "early")  # takes the lower id, not yet committed
                event(late, "late")
                late.commit()
                with Session(engine) as session:
                    assert process_events(session) == 1  # the later event only: the earlier is not visible
                early.commit()
            with Session(engine) as session:
                assert process_events(session) == 1  # the earlier one, now committed
            unconsumed = scalar(database_url, "SELECT count(*) FROM lifecycle_event WHERE NOT consumed")
            assert unconsumed == 0
        finally:
            engine.dispose()


def test_two_engines_making_the_cursor_row_at_once_do_not_fail(tmp_path: Path) -> None:
    """On a new PostgreSQL database the engine's mutex row does not exist yet: two engines (two
    processes started together) both insert it. The second must find "someone else is running",
    not fail its round with a duplicate key (a logged traceback and a lost poll interval)."""
    with fresh_database("postgresql", tmp_path) as database_url:
        settings = Settings(database_url=database_url, database_pool_size=2)
        migrate(settings)
        engine = create_db_engine(settings)
        try:
            with Session(engine) as first:
                first.add(EngineCursor(name="lifecycle", last_event_id=0))  # the first engine's run, not committed
                first.flush()
                with ThreadPoolExecutor(1) as pool:
                    second = pool.submit(run_engine, engine)
                    _wait_until(
                        "the second engine waiting for the first's row",
                        lambda: (
                            scalar(
                                database_url,
                                "SELECT count(*) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND wait_event_type = 'Lock'",
                            )
                            == 1
                        ),
                        deadline=30,
                        diagnose=lambda: str(second.done()),
                    )
                    first.commit()
                    assert second.result(timeout=30) == 0
        finally:
            engine.dispose()
