"""Fan-out benchmark (issue 4): a leaver's time-to-revoke across many SCIM workspaces, and a burst's drain rate.

Everything runs as real processes on 127.0.0.1:

- the targets: ``bench/fanout_target.py``, PyPI scim2-server's ASGI application serving one in-memory
  tenant per workspace under ``/<slug>/v2``, each request delayed by ``--latency-ms`` (asyncio.sleep,
  so concurrent requests wait at once), in ``--target-procs`` uvicorn processes;
- Entente: a fresh database (SQLite file or a new PostgreSQL database), set up through the ``entente``
  CLI exactly as an operator would (partner, SCIM token, ``workspace add … --connector scim --rate R``
  for each workspace, ``policy apply``), then ``entente serve`` with its delivery worker.

Phases, all driven through Entente's SCIM API:

1. provisioning: ``--people`` users (SCIM Bulk) put in group ``eng``, which the policy grants in all
   ``--workspaces``: people × workspaces ``update`` deliveries (each a GET by externalId and a POST at
   the target). Reported: deliveries/s from the first event to the last receipt.
2. latency: ``--leavers`` of them leave one at a time (PATCH ``active`` false). The next leaver is
   sent ``--gap-ms`` after the previous one's last receipt is committed, so each one meets an idle
   system. Time-to-revoke of a leaver = max over its deprovision receipts of (done_at - accepted_at);
   accepted_at is the lifecycle event's time (the PATCH's transaction), done_at the receipt's.
   Per-workspace p50/p99 and the phases of the path (engine pass + claim -> delivery) too.
3. burst: ``--burst`` more users in group ``burst``, granted only the first ``--burst-workspaces``
   workspaces (10,000 × 50 = 500,000 provisionings is not a reasonable setup on one shared machine),
   are provisioned, then all leave at once (SCIM Bulk PATCHes of 1,000). Reported: the drain rate in
   deprovisions/s, tasks/s (revoke_sessions + deprovision) and leavers/s, and their time-to-revoke.

    python bench/fanout.py --database sqlite --people 200 --leavers 100 --burst 10000 --workspaces 50
    python bench/fanout.py --database postgresql --people 200 --leavers 100 --burst 0

Results go to bench/results/fanout-<db>-<people>x<workspaces>-b<burst>x<burst-workspaces>.json and a
Markdown table on stdout. ``--py-spy DIR`` also samples ``entente serve`` (``py-spy record --gil``)
during the latency and burst phases and stores the hottest frames in the results.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import Engine, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    BIN,
    Profiler,
    drop_database,
    entente,
    free_port,
    git_state,
    new_database,
    stop,
    summary,
    wait_http,
)
from broker.db import create_db_engine  # noqa: E402
from broker.lifecycle.grants import WorkspaceAccount  # noqa: E402
from broker.lifecycle.outbox import DeliveryReceipt, DeliveryTask  # noqa: E402
from broker.settings import Settings  # noqa: E402
from broker.workspaces.models import Workspace  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
DOMAIN = "fanout.test"
_RECEIPTS = DeliveryReceipt.__table__  # type: ignore[attr-defined]
_TASKS = DeliveryTask.__table__  # type: ignore[attr-defined]
_ACCOUNTS = WorkspaceAccount.__table__  # type: ignore[attr-defined]
_WORKSPACES = Workspace.__table__  # type: ignore[attr-defined]


# -- the targets ----------------------------------------------------------------------------------
class Targets:
    """``procs`` fanout_target processes sharing the workspaces round-robin."""

    def __init__(self, slugs: list[str], procs: int, latency_ms: float, token: str, logs: Path) -> None:
        self.token = token
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.url_of: dict[str, str] = {}
        for p in range(procs):
            mine = slugs[p::procs]
            port = free_port()
            log = (logs / f"target-{p}.log").open("wb")
            process = subprocess.Popen(  # noqa: S603 - our own script and arguments
                [
                    sys.executable,
                    str(ROOT / "bench" / "fanout_target.py"),
                    "--port",
                    str(port),
                    "--tenants",
                    ",".join(mine),
                    "--latency-ms",
                    str(latency_ms),
                    "--token",
                    token,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            self.procs.append((base, process))
            for slug in mine:
                self.url_of[slug] = f"{base}/{slug}/v2"
        for base, process in self.procs:
            wait_http(f"{base}/_stats", process, "fanout_target")

    def reset(self) -> None:
        for base, _ in self.procs:
            httpx.post(f"{base}/_stats", timeout=30).raise_for_status()

    def stats(self, deletes: bool = False) -> list[dict[str, Any]]:
        params = {"deletes": "1"} if deletes else {}
        return [httpx.get(f"{base}/_stats", params=params, timeout=120).json() for base, _ in self.procs]

    def probe(self, slug: str, n: int = 200) -> dict[str, Any]:
        """The target's round trip as one sequential client sees it: GET by externalId filter."""
        headers = {"Authorization": f"Bearer {self.token}"}
        samples = []
        with httpx.Client(headers=headers, timeout=30) as client:
            for i in range(n + 10):
                began = time.perf_counter()
                response = client.get(f"{self.url_of[slug]}/Users", params={"filter": f'externalId eq "probe-{i}"'})
                elapsed = (time.perf_counter() - began) * 1000
                response.raise_for_status()
                if i >= 10:
                    samples.append(elapsed)
        return {"client_round_trip_ms": summary(samples)}

    def close(self) -> None:
        for _, process in self.procs:
            stop(process)


# -- Entente through its CLI ----------------------------------------------------------------------
def policy_yaml(slugs: list[str], burst_slugs: list[str]) -> str:
    lines = [
        "- id: fanout-eng",
        "  tenant: bench",
        "  description: eng works in every workspace.",
        "  when: { groups_any: [eng] }",
        "  grant:",
    ]
    lines += [f"    - {{ workspace: {slug}, role: member }}" for slug in slugs]
    if burst_slugs:
        lines += [
            "- id: fanout-burst",
            "  tenant: bench",
            "  description: the burst population.",
            "  when: { groups_any: [burst] }",
            "  grant:",
        ]
        lines += [f"    - {{ workspace: {slug}, role: member }}" for slug in burst_slugs]
    return "\n".join(lines) + "\n"


def setup_cli(
    env: dict[str, str], targets: Targets, slugs: list[str], burst_slugs: list[str], rate: float, scratch: Path
) -> tuple[str, float]:
    """migrate, partner + token, a workspace per slug, the policy: returns (SCIM token, seconds)."""
    began = time.perf_counter()
    entente(env, "migrate")
    entente(env, "partner", "add", "bench", "--name", "Fan-out bench", "--domain", DOMAIN)
    token = entente(env, "partner", "token", "bench", "--expires", "2d", "--label", "fanout").strip().splitlines()[-1]

    def add(slug: str) -> str:
        return entente(
            env,
            "workspace",
            "add",
            slug,
            "--connector",
            "scim",
            "--name",
            f"Target {slug}",
            "--set",
            f"base_url={targets.url_of[slug]}",
            "--set",
            f"token={targets.token}",
            "--rate",
            str(rate),
        )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(add, slugs))
    policy = scratch / "fanout-policy.yaml"
    policy.write_text(policy_yaml(slugs, burst_slugs))
    entente(env, "policy", "apply", str(policy))
    return token, time.perf_counter() - began


class Scim:
    """Entente's SCIM API for partner ``bench``."""

    def __init__(self, base: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        self.base = base
        self.client = httpx.Client(headers=headers, timeout=600)

    def bulk(self, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = json.dumps({"schemas": [BULK], "Operations": operations})
        response = self.client.post(f"{self.base}/Bulk", content=body)
        response.raise_for_status()
        results: list[dict[str, Any]] = response.json()["Operations"]
        failed = [op for op in results if not str(op["status"]).startswith("2")]
        if failed:
            raise RuntimeError(f"bulk failures: {failed[:2]}")
        return results

    def create_users(self, prefix: str, count: int, chunk: int = 1000) -> list[str]:
        ids: list[str] = []
        for lo in range(0, count, chunk):
            ops = []
            for i in range(lo, min(lo + chunk, count)):
                email = f"{prefix}{i:05d}@{DOMAIN}"
                doc = {
                    "schemas": [USER],
                    "userName": email,
                    "externalId": f"{prefix}-{i}",
                    "active": True,
                    "displayName": f"{prefix} {i}",
                    "name": {"givenName": prefix, "familyName": f"N{i}"},
                    "emails": [{"value": email, "type": "work", "primary": True}],
                }
                ops.append({"method": "POST", "path": "/Users", "bulkId": f"u{i}", "data": doc})
            ids += [op["location"].rsplit("/", 1)[-1] for op in self.bulk(ops)]
        return ids

    def create_group(self, name: str, members: list[str]) -> None:
        body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
        self.client.post(f"{self.base}/Groups", content=json.dumps(body)).raise_for_status()

    def leave(self, user_id: str) -> None:
        body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]}
        response = self.client.patch(f"{self.base}/Users/{user_id}", content=json.dumps(body))
        if response.status_code not in (200, 204):
            raise RuntimeError(f"PATCH {user_id}: {response.status_code} {response.text[:200]}")

    def leave_bulk(self, user_ids: list[str]) -> None:
        body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]}
        self.bulk([{"method": "PATCH", "path": f"/Users/{uid}", "data": body} for uid in user_ids])


# -- reading the outcome --------------------------------------------------------------------------
def max_receipt_id(db: Engine) -> int:
    with db.connect() as c:
        return int(c.execute(select(func.coalesce(func.max(_RECEIPTS.c.id), 0))).scalar_one())


def queue_counts(db: Engine, since: int, action: str) -> tuple[int, int, int]:
    """(receipts of ``action`` after receipt ``since``, tasks left, dead tasks)."""
    with db.connect() as c:
        done = c.execute(
            select(func.count()).select_from(_RECEIPTS).where(_RECEIPTS.c.id > since, _RECEIPTS.c.action == action)
        ).scalar_one()
        left = c.execute(select(func.count()).select_from(_TASKS)).scalar_one()
        dead = c.execute(select(func.count()).select_from(_TASKS).where(_TASKS.c.state == "dead")).scalar_one()
    return int(done), int(left), int(dead)


def wait_receipts(db: Engine, since: int, action: str, expected: int, what: str, timeout: float) -> float:
    """Poll until ``expected`` receipts of ``action`` exist after ``since`` and the queue is empty."""
    began = time.monotonic()
    last_print = began
    while True:
        done, left, dead = queue_counts(db, since, action)
        if dead:
            raise RuntimeError(f"{what}: {dead} dead tasks (see `entente outbox list --failed`)")
        if done >= expected and left == 0:
            return time.monotonic() - began
        now = time.monotonic()
        if now - began > timeout:
            raise RuntimeError(f"{what}: only {done}/{expected} {action} receipts after {timeout:.0f}s ({left} tasks)")
        if now - last_print > 15:
            print(
                f"  {what}: {done:,}/{expected:,} {action} receipts, {left:,} tasks queued, {now - began:.0f}s",
                file=sys.stderr,
            )
            last_print = now
        time.sleep(0.5)


def receipts(db: Engine, since: int, subjects: set[str] | None = None) -> list[dict[str, Any]]:
    cols = [
        _RECEIPTS.c.id,
        _RECEIPTS.c.subject_id,
        _RECEIPTS.c.workspace_id,
        _RECEIPTS.c.action,
        _RECEIPTS.c.outcome,
        _RECEIPTS.c.attempts,
        _RECEIPTS.c.accepted_at,
        _RECEIPTS.c.first_attempt_at,
        _RECEIPTS.c.done_at,
    ]
    with db.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(select(*cols).where(_RECEIPTS.c.id > since))]
    return [r for r in rows if subjects is None or r["subject_id"] in subjects]


def drain_rate(rows: list[dict[str, Any]]) -> dict[str, float]:
    first = min(r["accepted_at"] for r in rows)
    last = max(r["done_at"] for r in rows)
    seconds = (last - first).total_seconds()
    return {"deliveries": len(rows), "seconds": seconds, "per_s": len(rows) / seconds if seconds else 0.0}


def ms(delta: dt.timedelta) -> float:
    return delta.total_seconds() * 1000


# -- experiments: what-if runs of entente serve, changing nothing in the repository ----------------
EXPERIMENTS = {
    "none": None,
    # httpcore 1.0.9 imports sniffio inside current_async_library(), several times per request; anyio 4
    # no longer depends on sniffio, so every call is a failing import (a sys.path scan). This stub is what
    # installing sniffio would do for an asyncio program.
    "sniffio": "import asyncio, contextvars, sys, threading, types\n"
    "m = types.ModuleType('sniffio')\n"
    "m.thread_local = threading.local()\n"
    "m.current_async_library_cvar = contextvars.ContextVar('current_async_library_cvar', default=None)\n"
    "class AsyncLibraryNotFoundError(RuntimeError): pass\n"
    "m.AsyncLibraryNotFoundError = AsyncLibraryNotFoundError\n"
    "def current_async_library():\n"
    "    name = getattr(m.thread_local, 'name', None) or m.current_async_library_cvar.get()\n"
    "    if name: return name\n"
    "    try:\n"
    "        if asyncio.current_task() is not None: return 'asyncio'\n"
    "    except RuntimeError: pass\n"
    "    raise AsyncLibraryNotFoundError('unknown async library, or not in async context')\n"
    "m.current_async_library = current_async_library\n"
    "sys.modules['sniffio'] = m\n",
    # The worker's and connectors' httpx.AsyncClient replaced by httpx2's (pydantic's fork, already
    # installed for scim2-client), whose pool assignment is linear (httpx2 #974, #1075) instead of
    # httpcore 1.0.9's quadratic pass. Happy path only: httpx2's exceptions are not httpx's.
    "httpx2": "import httpx, httpx2\nhttpx.AsyncClient = httpx2.AsyncClient\n",
    # A thread back from a database round trip waits for the GIL up to the switch interval (5 ms) while
    # the delivery worker computes. 0.5 ms is `entente serve`'s default on PostgreSQL since this was
    # measured (ENTENTE_THREAD_SWITCH_INTERVAL_MS); on SQLite this stays a what-if.
    "switch-interval": "import sys\nsys.setswitchinterval(0.0005)\n",
}


def experiment_env(name: str, scratch: Path) -> dict[str, str]:
    code = EXPERIMENTS[name]
    if code is None:
        return {}
    folder = scratch / f"experiment-{name}"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}


def py_spy(directory: Path | None, pid: int, name: str) -> Profiler | None:
    """A profile of entente serve during one phase into ``directory/name.txt``; ``None`` without ``--py-spy``."""
    return Profiler(directory / f"{name}.txt", pid, rate=100, idle=True) if directory else None


# -- phases ---------------------------------------------------------------------------------------
def provision(db: Engine, scim: Scim, group: str, prefix: str, people: int, width: int) -> tuple[list[str], dict]:
    """Create ``people`` users, put them in ``group`` (granted ``width`` workspaces), wait for every update."""
    t0 = time.perf_counter()
    ids = scim.create_users(prefix, people)
    bulk_s = time.perf_counter() - t0
    mark = max_receipt_id(db)
    scim.create_group(group, ids)
    waited = wait_receipts(db, mark, "update", people * width, f"provisioning {group}", timeout=4 * 3600)
    rows = [r for r in receipts(db, mark) if r["action"] == "update"]
    outcomes = Counter(r["outcome"] for r in rows)
    return ids, {
        "load_after": os.getloadavg(),
        "people": people,
        "workspaces": width,
        "bulk_create_users_s": bulk_s,
        "wait_s": waited,
        "outcomes": dict(outcomes),
        "retried": sum(1 for r in rows if r["attempts"] > 1),
        **drain_rate(rows),
    }


def latency_run(
    db: Engine, scim: Scim, targets: Targets, leavers: list[str], width: int, gap_ms: float, slug_of: dict[str, str]
) -> dict[str, Any]:
    mark = max_receipt_id(db)
    targets.reset()
    sent_at: dict[str, float] = {}
    seen_after: dict[str, float] = {}
    for n, subject in enumerate(leavers):
        sent = time.time()
        scim.leave(subject)
        sent_at[subject] = sent
        deadline = time.monotonic() + 60
        while True:
            with db.connect() as c:
                done = c.execute(
                    select(func.count())
                    .select_from(_RECEIPTS)
                    .where(
                        _RECEIPTS.c.id > mark, _RECEIPTS.c.subject_id == subject, _RECEIPTS.c.action == "deprovision"
                    )
                ).scalar_one()
            if done >= width:
                seen_after[subject] = (time.time() - sent) * 1000
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"leaver {n}: {done}/{width} deprovision receipts after 60s")
            time.sleep(0.01)
        time.sleep(gap_ms / 1000)
    target_stats = targets.stats(deletes=True)
    rows = receipts(db, mark, set(leavers))
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_subject[r["subject_id"]].append(r)
    with db.connect() as c:
        remote = {
            (w, s): rid
            for w, s, rid in c.execute(
                select(_ACCOUNTS.c.workspace_id, _ACCOUNTS.c.subject_id, _ACCOUNTS.c.remote_id).where(
                    _ACCOUNTS.c.subject_id.in_(list(leavers))
                )
            )
        }
    deleted_at: dict[tuple[str, str], float] = {}
    for stats in target_stats:
        for slug, done in stats.pop("deletes", {}).items():
            for rid, at in done.items():
                deleted_at[(slug, rid)] = at
    ttr, engine_ms, delivery_ms, client_ttr, target_ttr, patch_ms = [], [], [], [], [], []
    per_workspace: dict[str, list[float]] = defaultdict(list)
    target_per_workspace: dict[str, list[float]] = defaultdict(list)
    target_first: list[float] = []
    slowest_count: Counter[str] = Counter()
    for subject in leavers:
        mine = by_subject[subject]
        deprov = [r for r in mine if r["action"] == "deprovision"]
        revoke = [r for r in mine if r["action"] == "revoke_sessions"]
        if len(deprov) != width or len(revoke) != width:
            raise RuntimeError(f"{subject}: {len(deprov)} deprovision / {len(revoke)} revoke_sessions receipts")
        accepted = deprov[0]["accepted_at"]
        last = max(deprov, key=lambda r: r["done_at"])
        ttr.append(ms(last["done_at"] - accepted))
        slowest_count[slug_of[last["workspace_id"]]] += 1
        engine_ms.append(ms(min(r["first_attempt_at"] for r in revoke) - accepted))
        delivery_ms.append(ms(last["done_at"] - min(r["first_attempt_at"] for r in revoke)))
        for r in deprov:
            per_workspace[slug_of[r["workspace_id"]]].append(ms(r["done_at"] - accepted))
        patch_ms.append((accepted.timestamp() - sent_at[subject]) * 1000)
        client_ttr.append(seen_after[subject])
        deletes = [
            deleted_at.get((slug_of[r["workspace_id"]], remote.get((r["workspace_id"], subject)) or "")) for r in deprov
        ]
        if all(d is not None for d in deletes):
            answered = [(d - sent_at[subject]) * 1000 for d in deletes if d is not None]
            target_ttr.append(max(answered))
            target_first.append(min(answered))
            for r, at in zip(deprov, answered, strict=True):
                target_per_workspace[slug_of[r["workspace_id"]]].append(at)
    workspaces = {slug: summary(v) for slug, v in sorted(per_workspace.items())}
    by_p99 = sorted(workspaces.items(), key=lambda kv: kv[1]["p99"], reverse=True)
    by_p50 = sorted(workspaces.items(), key=lambda kv: kv[1]["p50"], reverse=True)
    return {
        "load_after": os.getloadavg(),
        "leavers": len(leavers),
        "gap_ms": gap_ms,
        "time_to_revoke_ms": summary(ttr),
        "path_ms": {
            "accepted_to_first_claim (engine pass + claim)": summary(engine_ms),
            "first try to last receipt (per workspace: revoke_sessions, unsupported, no HTTP; then deprovision, "
            "GET + DELETE; one round, recorded together)": summary(delivery_ms),
        },
        "patch_send_to_accepted_ms": summary(patch_ms),
        "client_send_to_all_receipts_seen_ms": summary(client_ttr),
        "client_send_to_first_target_delete_ms": summary(target_first),
        "client_send_to_last_target_delete_ms": summary(target_ttr),
        "outcomes": {f"{a}:{o}": n for (a, o), n in Counter((r["action"], r["outcome"]) for r in rows).items()},
        "retried": sum(1 for r in rows if r["attempts"] > 1),
        "slowest_workspace_by_p99": {"slug": by_p99[0][0], **by_p99[0][1]},
        "slowest_workspace_by_p50": {"slug": by_p50[0][0], **by_p50[0][1]},
        "fastest_workspace_by_p50": {"slug": by_p50[-1][0], **by_p50[-1][1]},
        "last_workspace_counts": dict(slowest_count.most_common(10)),
        "per_workspace_ms": workspaces,
        "per_workspace_target_delete_ms": {k: summary(v) for k, v in sorted(target_per_workspace.items())},
        "target": target_stats,
    }


def burst_run(db: Engine, scim: Scim, targets: Targets, leavers: list[str], width: int) -> dict[str, Any]:
    mark = max_receipt_id(db)
    targets.reset()
    t0 = time.perf_counter()
    for lo in range(0, len(leavers), 1000):
        scim.leave_bulk(leavers[lo : lo + 1000])
    ingest_s = time.perf_counter() - t0
    waited = wait_receipts(db, mark, "deprovision", len(leavers) * width, "burst", timeout=6 * 3600)
    target_stats = targets.stats()
    rows = receipts(db, mark, set(leavers))
    deprov = [r for r in rows if r["action"] == "deprovision"]
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in deprov:
        by_subject[r["subject_id"]].append(r)
    ttr = [ms(max(r["done_at"] for r in mine) - mine[0]["accepted_at"]) for mine in by_subject.values()]
    all_rate = drain_rate(rows)
    dep_rate = drain_rate(deprov)
    first_accept = min(r["accepted_at"] for r in rows)
    last_accept = max(r["accepted_at"] for r in rows)
    return {
        "load_after": os.getloadavg(),
        "leavers": len(leavers),
        "workspaces": width,
        "ingest_s (Bulk PATCH, 1000 per request)": ingest_s,
        "events_accepted_over_s": (last_accept - first_accept).total_seconds(),
        "wait_s": waited,
        "tasks_per_s": all_rate["per_s"],
        "deprovisions_per_s": dep_rate["per_s"],
        "leavers_per_s": len(leavers) / all_rate["seconds"],
        "first_event_to_last_receipt_s": all_rate["seconds"],
        "time_to_revoke_ms": summary(ttr),
        "outcomes": {f"{a}:{o}": n for (a, o), n in Counter((r["action"], r["outcome"]) for r in rows).items()},
        "retried": sum(1 for r in rows if r["attempts"] > 1),
        "target": target_stats,
    }


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--people", type=int, default=200, help="people in eng, provisioned in every workspace")
    parser.add_argument("--leavers", type=int, default=100, help="latency run: leavers, one at a time")
    parser.add_argument("--gap-ms", type=float, default=300, help="idle time between latency-run leavers")
    parser.add_argument("--burst", type=int, default=10_000, help="burst run: leavers at once (0: skip)")
    parser.add_argument("--burst-workspaces", type=int, default=5, help="workspaces each burst person holds")
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added by the targets to every request")
    parser.add_argument("--target-procs", type=int, default=1, help="target processes (workspaces round-robin)")
    parser.add_argument("--rate", type=float, default=1000.0, help="`workspace add --rate`: deliveries/s per workspace")
    parser.add_argument("--batch-size", type=int, default=None, help="ENTENTE_DELIVERY_BATCH_SIZE (default: Entente's)")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR", help="profile entente serve into DIR")
    parser.add_argument(
        "--experiment",
        choices=sorted(EXPERIMENTS),
        default="none",
        help="what-if for entente serve only (see EXPERIMENTS); results are tagged with it",
    )
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (servers, database) when terminated
    if args.leavers > args.people:
        parser.error("--leavers cannot exceed --people")
    if args.burst_workspaces > args.workspaces:
        parser.error("--burst-workspaces cannot exceed --workspaces")

    scratch = Path(tempfile.mkdtemp(prefix="entente-fanout-"))
    url, pg_name = new_database(args.database, scratch, "entente_fanout")
    slugs = [f"ws{i:02d}" for i in range(args.workspaces)]
    burst_slugs = slugs[: args.burst_workspaces] if args.burst else []
    port = free_port()
    env = {
        **os.environ,
        "ENTENTE_DATABASE_URL": url,
        "ENTENTE_SECRET_KEY": Fernet.generate_key().decode(),
        "ENTENTE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    if args.batch_size:
        env["ENTENTE_DELIVERY_BATCH_SIZE"] = str(args.batch_size)
    settings = Settings(database_url=url)
    report: dict[str, Any] = {
        "database": args.database,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "python": platform.python_version()},
        "config": {
            "workspaces": args.workspaces,
            "people": args.people,
            "leavers": args.leavers,
            "gap_ms": args.gap_ms,
            "burst": args.burst,
            "burst_workspaces": len(burst_slugs),
            "latency_ms": args.latency_ms,
            "target_procs": args.target_procs,
            "rate_per_workspace": args.rate,
            "delivery_batch_size": args.batch_size or settings.delivery_batch_size,
            "serve_workers": 1,
            "experiment": args.experiment,
        },
    }
    experiment = "" if args.experiment == "none" else f"-{args.experiment}"
    shape = f"{args.people}x{args.workspaces}-b{args.burst}x{len(burst_slugs)}"
    out = ROOT / "bench" / "results" / f"fanout-{args.database}-{shape}{experiment}{args.tag}.json"
    report["incomplete"] = True  # until the last phase is done; the file is rewritten after each phase

    def save(report: dict[str, Any]) -> None:
        out.write_text(json.dumps(report, indent=2, default=str))

    targets = Targets(slugs, args.target_procs, args.latency_ms, uuid.uuid4().hex, scratch)
    serve: subprocess.Popen[bytes] | None = None
    db = create_db_engine(settings)
    try:
        report["target_idle"] = targets.probe(slugs[0])
        token, setup_s = setup_cli(env, targets, slugs, burst_slugs, args.rate, scratch)
        report["setup_cli_s"] = setup_s
        with (scratch / "serve.log").open("wb") as log:
            serve = subprocess.Popen(  # noqa: S603
                [str(BIN / "entente"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env={**env, **experiment_env(args.experiment, scratch)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_http(f"http://127.0.0.1:{port}/healthz", serve, "entente serve")
        scim = Scim(f"http://127.0.0.1:{port}/scim/v2", token)
        with db.connect() as c:
            slug_of = dict(c.execute(select(_WORKSPACES.c.id, _WORKSPACES.c.slug)).all())

        print(f"provisioning {args.people} x {args.workspaces} ...", file=sys.stderr)
        targets.reset()
        eng, report["provisioning"] = provision(db, scim, "eng", "eng", args.people, args.workspaces)
        report["provisioning"]["target"] = targets.stats()
        save(report)
        print(f"  {report['provisioning']['per_s']:.0f} deliveries/s", file=sys.stderr)

        print(f"latency run: {args.leavers} leavers one at a time ...", file=sys.stderr)
        profiler = py_spy(args.py_spy, serve.pid, f"fanout-{args.database}-latency")
        report["latency"] = latency_run(db, scim, targets, eng[: args.leavers], args.workspaces, args.gap_ms, slug_of)
        report["latency"]["py_spy"] = profiler.finish(top=25) if profiler else None
        save(report)
        lat = report["latency"]["time_to_revoke_ms"]
        print(f"  time-to-revoke p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms", file=sys.stderr)

        if args.burst:
            print(f"burst: provisioning {args.burst} x {len(burst_slugs)} ...", file=sys.stderr)
            targets.reset()
            burst, report["burst_provisioning"] = provision(db, scim, "burst", "burst", args.burst, len(burst_slugs))
            report["burst_provisioning"]["target"] = targets.stats()
            save(report)
            print(f"  {report['burst_provisioning']['per_s']:.0f} deliveries/s", file=sys.stderr)
            print(f"burst: {args.burst} leavers at once ...", file=sys.stderr)
            profiler = py_spy(args.py_spy, serve.pid, f"fanout-{args.database}-burst")
            report["burst"] = burst_run(db, scim, targets, burst, len(burst_slugs))
            report["burst"]["py_spy"] = profiler.finish(top=25) if profiler else None
        report["machine"]["load_after"] = os.getloadavg()
    finally:
        if serve is not None:
            stop(serve)
        targets.close()
        db.dispose()
        drop_database(pg_name)
    report.pop("incomplete", None)
    save(report)
    print(render(report))
    print(f"\n(results: {out.relative_to(ROOT)}; logs: {scratch})")


def render(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lat = report["latency"]
    ttr = lat["time_to_revoke_ms"]
    path = lat["path_ms"]
    slow = lat["slowest_workspace_by_p99"]
    prov = report["provisioning"]
    lines = [
        f"### {report['database']}: {cfg['workspaces']} SCIM workspaces, {cfg['latency_ms']:.0f} ms each"
        + ("" if cfg.get("experiment", "none") == "none" else f" (experiment: {cfg['experiment']})"),
        "",
        "| measure | value |",
        "|---|---|",
        f"| provisioning {prov['people']} people x {prov['workspaces']} workspaces | "
        f"{prov['deliveries']:,} updates in {prov['seconds']:.1f} s = **{prov['per_s']:,.0f} deliveries/s** |",
        f"| leaver time-to-revoke ({lat['leavers']} leavers, one at a time), p50 / p99 / max | "
        f"**{ttr['p50']:.0f} / {ttr['p99']:.0f}** / {ttr['max']:.0f} ms |",
    ]
    for name, s in path.items():
        lines.append(f"| - {name}, p50 / p99 | {s['p50']:.0f} / {s['p99']:.0f} ms |")
    lines += [
        f"| slowest workspace ({slow['slug']}), p50 / p99 | {slow['p50']:.0f} / {slow['p99']:.0f} ms |",
        f"| fastest workspace ({lat['fastest_workspace_by_p50']['slug']}), p50 | "
        f"{lat['fastest_workspace_by_p50']['p50']:.0f} ms |",
    ]
    if "burst" in report:
        bp, b = report["burst_provisioning"], report["burst"]
        bt = b["time_to_revoke_ms"]
        lines += [
            f"| burst provisioning {bp['people']:,} x {bp['workspaces']} | {bp['per_s']:,.0f} deliveries/s |",
            f"| burst of {b['leavers']:,} leavers x {b['workspaces']} workspaces: drain | "
            f"**{b['deprovisions_per_s']:,.0f} deprovisions/s** ({b['tasks_per_s']:,.0f}"
            f" tasks/s), **{b['leavers_per_s']:,.1f} leavers/s**, {b['first_event_to_last_receipt_s']:.0f} s |",
            f"| burst time-to-revoke p50 / p99 | {bt['p50'] / 1000:.1f} / {bt['p99'] / 1000:.1f} s |",
        ]
    idle = report["target_idle"]["client_round_trip_ms"]
    lines.append(f"| target round trip at idle (client), p50 / p99 | {idle['p50']:.1f} / {idle['p99']:.1f} ms |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
