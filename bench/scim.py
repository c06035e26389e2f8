"""SCIM benchmark: durable PATCH/s, filter latency (eq, sw, co, complex) and Bulk import rate,
for Entente on SQLite and PostgreSQL, side by side with PyPI scim2-server on the same load.

Both servers run as real processes on 127.0.0.1 and are driven over HTTP by the same client code.
Entente's population beyond the Bulk-imported users is seeded straight into the database through
the same document/column code the API uses (broker.scim.resources), because importing a million
users through HTTP would measure the importer for an hour; scim2-server is seeded through its Bulk
endpoint (it keeps everything in memory).

    python bench/scim.py --db postgresql --users 10000
    python bench/scim.py --db sqlite --users 1000000 --no-peer

PATCH load and filter queries go through bench/loadgen.py, a lean keep-alive HTTP/1.1 client: on a
2-core machine httpx would spend more CPU per request than the server under test. Besides rates
and latencies, each measure records the server process's CPU time per request (``cpu_ms``, from
/proc/<pid>/stat), which a machine shared with other work distorts far less than wall-clock rates.

Results go to bench/results/scim-<db>-<users>-w<workers>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
from sqlalchemy import insert, select
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    BIN,
    cpu_seconds,
    drop_database,
    free_port,
    new_database,
    process_tree,
    stop,
    wait_http,
)
from bench.loadgen import run_requests  # noqa: E402
from broker.audit.log import Actor  # noqa: E402
from broker.db import create_db_engine, migrate  # noqa: E402
from broker.scim.models import ScimUser, ScimValue  # noqa: E402
from broker.scim.resources import user_columns, user_values  # noqa: E402
from broker.settings import Settings  # noqa: E402
from broker.tenants.models import DomainPolicy  # noqa: E402
from broker.tenants.service import add_partner, issue_scim_token  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
DOMAIN = "bench.test"
FAMILY = ["Smith", "Jones", "Garcia", "Müller", "Rossi", "Dubois", "Kowalski", "Nakamura", "Okafor", "Silva"]


def user_doc(i: int) -> dict[str, Any]:
    email = f"user{i:07d}@{DOMAIN}"
    return {
        "schemas": [USER, ENTERPRISE],
        "userName": email,
        "externalId": f"ext-{i:07d}",
        "name": {"givenName": f"Given{i % 997}", "familyName": FAMILY[i % len(FAMILY)] + str(i % 101)},
        "displayName": f"User {i}",
        "active": True,
        "emails": [{"value": email, "type": "work", "primary": True}],
        ENTERPRISE: {"department": f"dept-{i % 50}", "employeeNumber": str(100000 + i)},
    }


def bulk_body(start: int, stop: int) -> dict[str, Any]:
    return {
        "schemas": [BULK],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": f"b{i}", "data": user_doc(i)} for i in range(start, stop)
        ],
    }


# -- servers --------------------------------------------------------------------------------------
class Server:
    def __init__(self, name: str, base: str, headers: dict[str, str], process: subprocess.Popen[bytes]) -> None:
        self.name, self.base, self.headers, self.process = name, base, headers, process
        self.patch_errors = 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far: its process and, with --workers, the
        worker processes it started (Linux /proc)."""
        return cpu_seconds(process_tree(self.process.pid))

    def stop(self) -> None:
        stop(self.process)


def start_entente(url: str, workers: int = 1, delivery_worker: bool = True) -> tuple[Server, str]:
    settings = Settings(database_url=url)
    migrate(settings)
    engine = create_db_engine(settings)
    with Session(engine, expire_on_commit=False) as session:
        partner = add_partner(
            session=session,
            slug="bench",
            name="Bench",
            domains=[DOMAIN],
            actor=Actor("cli", "bench"),
            domain_policy=DomainPolicy.ENFORCE,
        )
        token = issue_scim_token(
            session=session, slug="bench", expires_in=dt.timedelta(days=1), actor=Actor("cli", "bench")
        ).secret_text
    engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "ENTENTE_DATABASE_URL": url,
        "ENTENTE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ENTENTE_DELIVERY_WORKER": str(delivery_worker).lower(),
    }
    process = subprocess.Popen(
        [str(BIN / "entente"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    base = f"http://127.0.0.1:{port}/scim/v2"
    wait_http(f"{base}/ServiceProviderConfig", process, "entente serve", headers=headers)
    return Server("entente", base, headers, process), partner.id


def start_scim2_server() -> Server:
    port = free_port()
    token = uuid.uuid4().hex
    process = subprocess.Popen(
        [str(BIN / "scim2-server"), "--hostname", "127.0.0.1", "--port", str(port), "--bearer-token", token],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    base = f"http://127.0.0.1:{port}/v2"
    wait_http(f"{base}/ServiceProviderConfig", process, "scim2-server", headers=headers)
    return Server("scim2-server", base, headers, process)


def seed_direct(url: str, partner_id: str, start: int, stop: int, batch: int = 5000) -> float:
    """Insert users start..stop-1 through the API's own document -> columns code; returns seconds.

    PostgreSQL gets COPY (executemany of a million rows takes most of an hour); SQLite executemany.
    """
    if url.startswith("postgresql"):
        return seed_copy(url, partner_id, start, stop)
    engine = create_db_engine(Settings(database_url=url))
    began = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    for lo in range(start, stop, batch):
        hi = min(lo + batch, stop)
        rows, docs = [], []
        for i in range(lo, hi):
            doc = user_doc(i)
            docs.append(doc)
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "partner_id": partner_id,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                    "joined_at": now,
                    "attributes": doc,
                    **user_columns(doc),
                }
            )
        with engine.begin() as connection:
            connection.execute(insert(ScimUser), rows)
            pks = dict(
                connection.execute(
                    select(ScimUser.id, ScimUser.pk).where(ScimUser.id.in_([r["id"] for r in rows]))
                ).all()
            )
            values = [
                {"partner_id": partner_id, "user_pk": pks[row["id"]], **value}
                for row, doc in zip(rows, docs, strict=True)
                for value in user_values(doc)
            ]
            connection.execute(insert(ScimValue), values)
    engine.dispose()
    return time.perf_counter() - began


def seed_copy(url: str, partner_id: str, start: int, stop: int) -> float:
    """PostgreSQL: COPY users, then COPY their value rows keyed by the pks the users received."""
    began = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    user_cols = [c.name for c in ScimUser.__table__.columns if c.name != "pk"]  # type: ignore[attr-defined]
    value_cols = ["partner_id", "user_pk", "attribute", "value", "value_ci", "type", "primary", "display"]
    with psycopg.connect(dsn) as conn:
        # A bulk load: the rows reference what this function just wrote, so the per-row FK triggers
        # (each a FOR KEY SHARE lock on a scim_user row) only cost time; skip them for this session.
        conn.execute("SET session_replication_role = replica")
        with conn.cursor().copy(f"COPY scim_user ({', '.join(user_cols)}) FROM STDIN") as copy:
            for i in range(start, stop):
                doc = user_doc(i)
                row = {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{i}")),
                    "partner_id": partner_id,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                    "joined_at": now,
                    "attributes": json.dumps(doc),
                    **user_columns(doc),
                }
                copy.write_row([row[c] for c in user_cols])
        pks = dict(conn.execute("SELECT id, pk FROM scim_user WHERE partner_id = %s", (partner_id,)).fetchall())
        quoted = ", ".join(f'"{c}"' for c in value_cols)
        with conn.cursor().copy(f"COPY scim_value ({quoted}) FROM STDIN") as copy:
            for i in range(start, stop):
                doc = user_doc(i)
                pk = pks[str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{i}"))]
                for value in user_values(doc):
                    copy.write_row(
                        [
                            partner_id,
                            pk,
                            value["attribute"],
                            value["value"],
                            value["value_ci"],
                            value["type"],
                            value["primary"],
                            value["display"],
                        ]
                    )
        conn.commit()
    return time.perf_counter() - began


def analyze(url: str) -> None:
    """Refresh planner statistics after the import, as PostgreSQL's autovacuum does within a minute or so
    (SQLite's planner needs none for these indexed lookups)."""
    engine = create_db_engine(Settings(database_url=url))
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    engine.dispose()


# -- measurements ---------------------------------------------------------------------------------
def bulk_import(server: Server, start: int, stop: int, per_request: int = 1000) -> dict[str, float]:
    """Users/s through POST /Bulk, sequential requests of `per_request` operations, and server CPU per user."""
    with httpx.Client(headers=server.headers, timeout=600) as client:
        cpu = server.cpu_seconds()
        began = time.perf_counter()
        for lo in range(start, stop, per_request):
            hi = min(lo + per_request, stop)
            response = client.post(f"{server.base}/Bulk", content=json.dumps(bulk_body(lo, hi)))
            response.raise_for_status()
            failed = [op for op in response.json()["Operations"] if not str(op["status"]).startswith("2")]
            if failed:
                raise RuntimeError(f"{server.name}: bulk failures: {failed[:2]}")
        elapsed = time.perf_counter() - began
    return {
        "users_per_s": (stop - start) / elapsed,
        "cpu_ms_per_user": 1000 * (server.cpu_seconds() - cpu) / (stop - start),
    }


def filters(n: int, rng: random.Random) -> dict[str, list[str]]:
    def pick() -> int:
        return rng.randrange(n)

    return {
        "eq userName": [f'userName eq "user{pick():07d}@{DOMAIN}"' for _ in range(400)],
        "eq externalId": [f'externalId eq "ext-{pick():07d}"' for _ in range(400)],
        "sw userName": [f'userName sw "user{pick():07d}"'[:-2] + '"' for _ in range(100)],
        "co familyName": [f'name.familyName co "{FAMILY[pick() % len(FAMILY)][1:4]}{pick() % 101}"' for _ in range(30)],
        "complex emails": [f'emails[type eq "work" and value eq "user{pick():07d}@{DOMAIN}"]' for _ in range(400)],
    }


WARMUP_QUERIES = 50
"""Queries of each kind, other targets than the measured ones, sent before measuring: psycopg prepares
a statement at its fifth execution and a first query per kind warms caches, so without this the p99
of a few hundred sequential queries is set by start-up effects a running server has long left."""


def latency(server: Server, queries: list[str], warmup: list[str]) -> dict[str, float]:
    """Sequential GET /Users?filter=...&count=10 over one keep-alive connection, after ``warmup``."""

    def request(query: str) -> tuple[str, str, bytes]:
        return ("GET", "/Users?" + urlencode({"filter": query, "count": 10}), b"")

    run_requests(server.base, server.headers, [request(q) for q in warmup[:WARMUP_QUERIES]], 1)
    cpu = server.cpu_seconds()
    outcome = run_requests(server.base, server.headers, [request(q) for q in queries], 1)
    cpu = server.cpu_seconds() - cpu
    if outcome.errors:
        raise RuntimeError(f"{server.name}: filter queries failed, e.g. {outcome.errors[0]}")
    samples = sorted(s * 1000 for s in outcome.latencies)
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "n": len(samples),
        "cpu_ms": 1000 * cpu / len(samples),
    }


def patch_throughput(server: Server, ids: list[str], total: int, concurrency: int) -> dict[str, float]:
    """Durable PATCH/s: every PATCH changes a value, so each is a committed write (+ audit + event)."""
    requests = [
        (
            "PATCH",
            f"/Users/{ids[i % len(ids)]}",
            json.dumps(
                {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": f"t{i}"}]}
            ).encode(),
        )
        for i in range(total)
    ]
    cpu = server.cpu_seconds()
    outcome = run_requests(server.base, server.headers, requests, concurrency)
    cpu = server.cpu_seconds() - cpu
    if outcome.errors:
        print(
            f"{server.name}: {len(outcome.errors)} of {total} PATCHes failed, e.g. {outcome.errors[0]}", file=sys.stderr
        )
    return {"per_s": outcome.ok / outcome.elapsed, "errors": len(outcome.errors), "cpu_ms": 1000 * cpu / total}


def user_ids(server: Server, count: int) -> list[str]:
    with httpx.Client(headers=server.headers, timeout=600) as client:
        response = client.get(f"{server.base}/Users", params={"count": count, "attributes": "userName"})
        response.raise_for_status()
        return [r["id"] for r in response.json()["Resources"]]


def measure(server: Server, n: int, patches: int, concurrency: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    warmups = filters(n, random.Random(seed + 1))
    result: dict[str, Any] = {
        "filters": {kind: latency(server, queries, warmups[kind]) for kind, queries in filters(n, rng).items()}
    }
    ids = user_ids(server, 1000)
    patch = patch_throughput(server, ids, patches, concurrency)
    result["patch_per_s"] = patch["per_s"]
    result["patch_errors"] = patch["errors"]
    result["patch_cpu_ms"] = patch["cpu_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--bulk-users", type=int, default=10_000, help="how many users go through /Bulk")
    parser.add_argument("--patches", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-peer", action="store_true", help="skip scim2-server (e.g. at 1M users)")
    parser.add_argument("--workers", type=int, default=1, help="entente serve --workers")
    parser.add_argument(
        "--no-delivery-worker",
        action="store_true",
        help="serve without the in-process lifecycle engine and delivery worker (SCIM alone)",
    )
    args = parser.parse_args()

    url, pg_name = new_database(args.db, Path(tempfile.mkdtemp(prefix="entente-bench-")), "entente_bench")
    report: dict[str, Any] = {
        "db": args.db,
        "users": args.users,
        "patches": args.patches,
        "concurrency": args.concurrency,
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "delivery_worker": not args.no_delivery_worker,
    }
    entente, partner_id = start_entente(url, args.workers, delivery_worker=not args.no_delivery_worker)
    try:
        bulk_users = min(args.bulk_users, args.users)
        bulk = bulk_import(entente, 0, bulk_users)
        report["entente_bulk_users_per_s"] = bulk["users_per_s"]
        report["entente_bulk_cpu_ms_per_user"] = bulk["cpu_ms_per_user"]
        if args.users > bulk_users:
            report["entente_seed_seconds"] = seed_direct(url, partner_id, bulk_users, args.users)
        analyze(url)
        report["entente"] = measure(entente, args.users, args.patches, args.concurrency, seed=7)
    finally:
        entente.stop()
        drop_database(pg_name)
    if not args.no_peer:
        peer = start_scim2_server()
        try:
            bulk = bulk_import(peer, 0, args.users)
            report["scim2_server_bulk_users_per_s"] = bulk["users_per_s"]
            report["scim2_server_bulk_cpu_ms_per_user"] = bulk["cpu_ms_per_user"]
            report["scim2_server"] = measure(peer, args.users, args.patches, args.concurrency, seed=7)
        finally:
            peer.stop()
    suffix = "-scim-only" if args.no_delivery_worker else ""
    out = ROOT / "bench" / "results" / f"scim-{args.db}-{args.users}-w{args.workers}{suffix}.json"
    out.write_text(json.dumps(report, indent=2))
    print(render(report))


def render(report: dict[str, Any]) -> str:
    servers = [s for s in ("entente", "scim2_server") if s in report]
    lines = [
        f"### {report['db']}, {report['users']:,} users"
        + ("" if report.get("delivery_worker", True) else " (SCIM alone: no delivery worker)"),
        "",
        "| measure | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(s) for s in servers) + " |")

    row("Bulk import, users/s", lambda s: f"{report.get(f'{s}_bulk_users_per_s', 0):,.0f}")
    row("Bulk, server CPU ms/user", lambda s: f"{report.get(f'{s}_bulk_cpu_ms_per_user', 0):.2f}")
    row("durable PATCH/s", lambda s: f"{report[s]['patch_per_s']:,.0f}")
    row("PATCH, server CPU ms", lambda s: f"{report[s].get('patch_cpu_ms', 0):.2f}")
    row("PATCH errors", lambda s: str(report[s].get("patch_errors", 0)))
    for name in report["entente"]["filters"]:
        row(
            f"filter {name}, p50 / p99 ms (CPU ms)",
            lambda s, name=name: "{p50_ms:.1f} / {p99_ms:.1f} ({cpu:.2f})".format(
                cpu=report[s]["filters"][name].get("cpu_ms", 0), **report[s]["filters"][name]
            ),
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
