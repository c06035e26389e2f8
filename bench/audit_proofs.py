"""Audit log benchmark (issue 6): what sequencing, checkpoints and RFC 9162 proofs cost on a large log.

On a fresh database (a SQLite file, or a new PostgreSQL database), made by Alembic:

1. ``--leaves`` audit records are written in batches (the same entry and digest ``append_audit``
   computes, inserted with executemany; the enqueue trigger queues each one as in production);
2. the checkpointer sequences them all and signs one checkpoint (sequencing rate, records/s);
3. ``--samples`` random inclusion proofs at the full size and as many random consistency proofs are
   read from the stored subtree hashes (``broker.audit.tree``), each verified; then the same
   inclusion proofs through the HTTP API in-process (FastAPI TestClient, operator token);
4. a full export is written and verified offline (``broker.audit.verify``).

    python bench/audit_proofs.py --database sqlite --leaves 100000
    python bench/audit_proofs.py --database postgresql --leaves 100000

Results go to bench/results/audit-proofs-<db>-<leaves>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from bench.harness import PG_URL, drop_database, new_database  # noqa: E402
from broker.audit.checkpoints import load_log_key, make_checkpoint  # noqa: E402
from broker.audit.export import export_lines  # noqa: E402
from broker.audit.log import AuditRecord, leaf_data  # noqa: E402
from broker.audit.merkle import verify_consistency, verify_inclusion  # noqa: E402
from broker.audit.tree import AuditNode, consistency_proof, inclusion_proof, root_at  # noqa: E402
from broker.audit.verify import verify_export  # noqa: E402
from broker.db import create_db_engine, migrate  # noqa: E402
from broker.main import create_app  # noqa: E402
from broker.settings import Settings  # noqa: E402
from broker.types import utcnow  # noqa: E402

_RECORDS = AuditRecord.__table__  # type: ignore[attr-defined]
TOKEN = "ent_audit_bench"


def pct(values: list[float], q: float) -> float:
    """Element int(q·n) of the sorted list (p50: the upper middle), as this benchmark's figures always were;
    not harness.pct's nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"mean": round(statistics.mean(ms), 3), "p50": round(pct(ms, 0.5), 3), "p99": round(pct(ms, 0.99), 3)}


def _row(n: int) -> dict[str, Any]:
    occurred_at = utcnow()
    detail = {"n": n, "name": f"user-{n}", "groups": ["eng", "ops"][: n % 3]}
    entry = {
        "occurred_at": occurred_at.isoformat(),
        "partner_id": None,
        "actor": ["system", "bench"],
        "action": "bench.record",
        "resource": ["User", str(n)],
        "before": None,
        "after": None,
        "detail": detail,
    }
    return {
        "occurred_at": occurred_at,
        "partner_id": None,
        "actor_kind": "system",
        "actor_id": "bench",
        "action": "bench.record",
        "resource_type": "User",
        "resource_id": str(n),
        "before_sha256": None,
        "after_sha256": None,
        "detail": detail,
        "leaf_sha256": hashlib.sha256(leaf_data(entry)).hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--leaves", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--pg", default=PG_URL)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    url, pg_name = new_database(args.database, workdir, "entente_bench_audit", url_base=args.pg)
    settings = Settings(
        database_url=url,
        audit_signing_key=base64.b64encode(b"\x07" * 32).decode(),
        audit_operator_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
        delivery_worker=False,
        public_base_url="http://bench",
    )
    results: dict[str, Any] = {
        "database": args.database,
        "leaves": args.leaves,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        migrate(settings)
        engine = create_db_engine(settings)

        started = time.perf_counter()
        batch = 5000
        for offset in range(0, args.leaves, batch):
            with engine.begin() as connection:
                connection.execute(insert(_RECORDS), [_row(n) for n in range(offset, min(args.leaves, offset + batch))])
        results["write_records_per_s"] = round(args.leaves / (time.perf_counter() - started))

        started = time.perf_counter()
        with Session(engine, expire_on_commit=False) as session:
            made = make_checkpoint(session, settings, force=True, wait=True)
        elapsed = time.perf_counter() - started
        assert made is not None and made.tree_size == args.leaves
        results["sequence_and_sign_s"] = round(elapsed, 2)
        results["sequence_records_per_s"] = round(args.leaves / elapsed)
        size, root = made.tree_size, made.root_hash

        rng = random.Random(6)
        inclusion_t, consistency_t, lengths = [], [], []
        with Session(engine) as session:
            results["stored_nodes"] = (
                session.connection().execute(select(func.count()).select_from(AuditNode)).scalar_one()
            )
            started = time.perf_counter()
            assert root_at(session, size) == root
            results["root_ms"] = round((time.perf_counter() - started) * 1000, 3)
            leaf_hashes = {}
            for _ in range(args.samples):
                index = rng.randrange(size)
                started = time.perf_counter()
                proof = inclusion_proof(session, leaf_index=index, tree_size=size)
                inclusion_t.append(time.perf_counter() - started)
                lengths.append(len(proof))
                leaf = session.get(AuditNode, index)
                assert leaf is not None
                leaf_hashes[index] = bytes(leaf.hash)
                verify_inclusion(index, size, leaf_hashes[index], proof, root)
            for _ in range(args.samples):
                first = rng.randrange(1, size)
                started = time.perf_counter()
                proof = consistency_proof(session, first=first, second=size)
                consistency_t.append(time.perf_counter() - started)
                verify_consistency(first, size, proof, root_at(session, first), root)
            session.rollback()
        results["inclusion_proof_ms"] = summary_ms(inclusion_t)
        results["inclusion_proof_hashes_max"] = max(lengths)
        results["consistency_proof_ms"] = summary_ms(consistency_t)

        app = create_app(settings)
        client = TestClient(app, base_url="http://bench/audit/v1")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        api_t = []
        for index in list(leaf_hashes)[: min(300, len(leaf_hashes))]:
            started = time.perf_counter()
            response = client.get(f"/proofs/inclusion?leaf_index={index}&tree_size={size}", headers=headers)
            api_t.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        results["api_inclusion_request_ms"] = summary_ms(api_t)
        client.close()
        app.state.engine.dispose()

        started = time.perf_counter()
        lines = list(export_lines(engine, tree_size=size))
        results["export_s"] = round(time.perf_counter() - started, 2)
        results["export_mb"] = round(sum(len(line.encode()) for line in lines) / 1e6, 1)
        started = time.perf_counter()
        report = verify_export(lines, checkpoint_note=made.note, log_key=load_log_key(settings).verifier_key)
        results["verify_offline_s"] = round(time.perf_counter() - started, 2)
        assert report.leaves == size
        if args.database == "postgresql":
            with engine.connect() as connection:
                bytes_ = connection.execute(
                    text("SELECT pg_total_relation_size('audit_node') + pg_total_relation_size('audit_leaf')")
                ).scalar_one()
            results["tree_tables_mb"] = round(bytes_ / 1e6, 1)
        engine.dispose()
    finally:
        drop_database(pg_name)

    out = ROOT / "bench" / "results" / f"audit-proofs-{args.database}-{args.leaves}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"| measure ({args.database}, {args.leaves} leaves) | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
