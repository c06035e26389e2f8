"""Stale-access report benchmark (issue 6): the whole streamed report over N people x W workspaces.

On a fresh PostgreSQL database made by Alembic, state is generated straight into the tables with
set-based ``INSERT … SELECT generate_series`` (no ORM, no HTTP: a million people in minutes):

- ``--partners`` partners, three SCIM tokens each (one in use, one never used, one expiring);
  the last ``--silent-partners`` of them have had no SCIM change for 60 days;
- ``--people`` people spread over the partners, 1% of them leavers; SCIM changes spread over the
  last year; 60% have a login session from the last 120 days;
- ``--grants-per-person`` grants per active person over the ``--workspaces`` workspaces (1% past
  their end date, 10% with one in the future), each with its workspace account;
- per leaver, a session revocation and a removal pending (70%) or dead-lettered (30%) in each of
  their workspaces; one reconciliation orphan per 2,000 people.

Then ``ANALYZE``, and the report every partner gets (``broker.reports.runner.stale_access``, as
`entente report stale --format json` runs it) is rendered as JSON Lines and timed: total, time to
the first row, rows and seconds per section, peak RSS (flat: the rows are streamed).

    .venv/bin/python bench/report.py --people 100000 --workspaces 50
    .venv/bin/python bench/report.py                      # 1,000,000 x 50, the issue's target (<= 60 s)

Results go to bench/results/report-postgresql-<people>x<workspaces>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

import broker.reports.runner as runner  # noqa: E402
from bench.harness import create_pg_database, drop_database  # noqa: E402
from broker.db import create_db_engine, migrate  # noqa: E402
from broker.reports.render import ReportFormat, render  # noqa: E402
from broker.reports.rows import ReportRow  # noqa: E402
from broker.reports.scope import ReportOptions, ReportScope  # noqa: E402
from broker.settings import Settings  # noqa: E402
from broker.types import utcnow  # noqa: E402

# Each statement is one set-based insert; :P partners, :N people, :W workspaces, :G grants per person.
# Person i (1..N) belongs to partner (i % P) + 1; every 100th person is a leaver.
GENERATE = [
    (
        "partners",
        """INSERT INTO partner (id, slug, name, status, domain_policy, created_at)
        SELECT md5('p' || i)::uuid::text, 'bench-p' || lpad(i::text, 4, '0'), 'Partner ' || i, 'active', 'enforce',
               now() - interval '400 days'
        FROM generate_series(1, :P) AS i""",
    ),
    (
        "scim tokens",
        """INSERT INTO scim_token (id, partner_id, secret_sha256, label, created_at, expires_at, revoked_at,
                                 last_used_at)
        SELECT substr(md5('t' || i || '.' || k), 1, 16), md5('p' || i)::uuid::text,
               md5('s' || i || k) || md5('S' || i || k), 'token ' || k,
               now() - interval '200 days',
               CASE k WHEN 3 THEN now() + interval '10 days' ELSE now() + interval '165 days' END,
               NULL,
               CASE k WHEN 1 THEN now() - interval '1 hour' WHEN 3 THEN now() - interval '2 days' END
        FROM generate_series(1, :P) AS i, generate_series(1, 3) AS k""",
    ),
    (
        "workspaces",
        """INSERT INTO workspace (id, slug, name, connector, config_public, config_sealed, role_groups, attribute_map,
                                on_leave, rate_per_second, status, created_at)
        SELECT md5('w' || j)::uuid::text, 'bench-w' || lpad(j::text, 3, '0'), 'Workspace ' || j, 'scim', '{}', 'x',
               '{}', '{}', 'deprovision', 20, 'active', now() - interval '400 days'
        FROM generate_series(1, :W) AS j""",
    ),
    (
        "people",
        """INSERT INTO scim_user (id, partner_id, version, created_at, updated_at, joined_at, attributes,
                                user_name, user_name_ci, active)
        SELECT md5('u' || i)::uuid::text, md5('p' || (i % :P + 1))::uuid::text, 1,
               now() - interval '400 days',
               now() - (i::bigint * 7919 % 365) * interval '1 day' - (i % 86400) * interval '1 s',
               now() - interval '400 days', '{}', 'user' || i || '@p' || (i % :P + 1) || '.test',
               'user' || i || '@p' || (i % :P + 1) || '.test', i % 100 <> 0
        FROM generate_series(1, :N) AS i""",
    ),
    (
        "login sessions",
        """INSERT INTO login_session (id, secret_sha256, partner_id, subject_id, upstream_issuer, upstream_subject,
                                    created_at, expires_at)
        SELECT md5('l' || i)::uuid::text, md5('ls' || i) || md5('LS' || i), md5('p' || (i % :P + 1))::uuid::text,
               md5('u' || i)::uuid::text, 'https://idp.example', 'sub' || i,
               now() - (i::bigint * 104729 % 120) * interval '1 day',
               now() - (i::bigint * 104729 % 120) * interval '1 day' + interval '8 hours'
        FROM generate_series(1, :N) AS i WHERE i % 10 < 6""",
    ),
    (
        "grants",
        """INSERT INTO access_grant (partner_id, subject_id, workspace_id, role, rule_id, until, spec_sha256,
                                   granted_at)
        SELECT md5('p' || (i % :P + 1))::uuid::text, md5('u' || i)::uuid::text,
               md5('w' || ((i + k) % :W + 1))::uuid::text,
               'member', 'bench-rule-' || (i % :P + 1),
               CASE WHEN i % 100 = 1 THEN now() - interval '5 days'
                    WHEN i % 10 = 2 THEN now() + interval '90 days' END,
               '', now() - interval '300 days'
        FROM generate_series(1, :N) AS i, generate_series(0, :G - 1) AS k WHERE i % 100 <> 0""",
    ),
    (
        "workspace accounts",
        """INSERT INTO workspace_account (workspace_id, partner_id, subject_id, remote_id, state, updated_at)
        SELECT workspace_id, partner_id, subject_id, 'r-' || subject_id, 'active', granted_at FROM access_grant""",
    ),
    (
        "lifecycle events",
        """INSERT INTO lifecycle_event (partner_id, kind, subject_type, subject_id, detail, occurred_at, consumed)
        SELECT md5('p' || (i % :P + 1))::uuid::text, CASE WHEN i % 100 = 0 THEN 'left' ELSE 'joined' END, 'user',
               md5('u' || i)::uuid::text, '{}',
               CASE WHEN i % :P + 1 > :P - :S THEN now() - interval '60 days' - (i % 300) * interval '1 day'
                    ELSE now() - (i::bigint * 7919 % 365) * interval '1 day' END,
               true
        FROM generate_series(1, :N) AS i""",
    ),
    (
        "revocation tasks",
        """INSERT INTO delivery_task (workspace_id, partner_id, subject_id, action, spec, state, attempts, not_before,
                                    lease_until, cause, accepted_at, first_attempt_at, last_error)
        SELECT md5('w' || ((i + k) % :W + 1))::uuid::text, md5('p' || (i % :P + 1))::uuid::text,
               md5('u' || i)::uuid::text, a.action, NULL,
               CASE WHEN i % 1000 < 300 THEN 'dead' ELSE 'pending' END,
               CASE WHEN i % 1000 < 300 THEN 12 ELSE 3 END,
               now() + interval '5 minutes', NULL, 'event:' || i, now() - (i % 72) * interval '1 hour',
               now() - (i % 72) * interval '1 hour', 'HTTP 503 from the workspace'
        FROM generate_series(100, :N, 100) AS i, generate_series(0, :G - 1) AS k,
             (VALUES ('revoke_sessions'), ('deprovision')) AS a(action)""",
    ),
    (
        "reconcile orphans",
        """INSERT INTO reconcile_orphan (workspace_id, partner_id, subject_id, remote_id, user_name, first_found_at,
                                       last_seen_at)
        SELECT md5('w' || ((i + :G) % :W + 1))::uuid::text, md5('p' || (i % :P + 1))::uuid::text,
               md5('u' || i)::uuid::text,
               'hand-made-' || i, 'user' || i, now() - interval '3 days', now() - interval '1 day'
        FROM generate_series(7, :N, 2000) AS i""",
    ),
]


def generate(engine: Engine, params: dict[str, int]) -> dict[str, float]:
    """Run every generating statement in its own transaction; seconds per step."""
    took: dict[str, float] = {}
    for step, sql in GENERATE:
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(sql), params)
        took[step] = round(time.perf_counter() - started, 2)
        print(f"  {step}: {took[step]} s", flush=True)
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    took["analyze"] = round(time.perf_counter() - started, 2)
    return took


def _timed(section: runner.SectionQuery, spent: dict[str, float]) -> runner.SectionQuery:
    """The section, with the time spent inside it (query and row building, not rendering) added up."""

    def wrapper(*args: Any, **kwargs: Any) -> Iterator[ReportRow]:
        name = section.__name__  # type: ignore[attr-defined]
        rows = section(*args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                row = next(rows)
            except StopIteration:
                spent[name] += time.perf_counter() - started
                return
            spent[name] += time.perf_counter() - started
            yield row

    return wrapper


def run_report(engine: Engine, options: ReportOptions) -> dict[str, Any]:
    """The whole report, every partner, as JSON Lines (bytes counted, not kept)."""
    spent: dict[str, float] = defaultdict(float)
    runner.SECTIONS = tuple(_timed(s, spent) for s in runner.SECTIONS)
    counts: Counter[str] = Counter()
    first_row: float | None = None
    size = 0

    def counted(rows: Iterator[ReportRow]) -> Iterator[ReportRow]:
        for row in rows:
            counts[row.section.value] += 1
            yield row

    started = time.perf_counter()
    for chunk in render(counted(runner.stale_access(engine, scope=ReportScope(), options=options)), ReportFormat.JSON):
        if first_row is None and counts:
            first_row = time.perf_counter() - started
        size += len(chunk.encode())
    total = time.perf_counter() - started
    return {
        "report_s": round(total, 2),
        "first_row_s": round(first_row or total, 3),
        "rows": sum(counts.values()),
        "rows_per_section": dict(counts),
        "seconds_in_section_queries": {k: round(v, 2) for k, v in spent.items()},
        "jsonl_mb": round(size / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--partners", type=int, default=20)
    parser.add_argument("--silent-partners", type=int, default=2)
    parser.add_argument("--grants-per-person", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2, help="timed report runs (the first also warms the cache)")
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = parser.parse_args()
    if not 1 <= args.grants_per_person <= args.workspaces:
        parser.error("--grants-per-person must be between 1 and --workspaces")
    params = {
        "N": args.people, "W": args.workspaces, "P": args.partners, "G": args.grants_per_person,
        "S": args.silent_partners,
    }  # fmt: skip

    url, name = create_pg_database("entente_bench_report")
    settings = Settings(database_url=url, database_pool_size=2)
    results: dict[str, Any] = {
        "database": "postgresql",
        "people": args.people,
        "workspaces": args.workspaces,
        "partners": args.partners,
        "grants_per_person": args.grants_per_person,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
    }
    engine = create_db_engine(settings)
    try:
        migrate(settings)
        print(f"generating {args.people:,} people x {args.workspaces} workspaces in {name}", flush=True)
        results["generate_s"] = generate(engine, params)
        with engine.connect() as conn:
            results["table_rows"] = {
                table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()  # noqa: S608 - our names
                for table in ("scim_user", "access_grant", "login_session", "lifecycle_event", "delivery_task")
            }
        options = ReportOptions.from_settings(settings, now=utcnow())
        results["thresholds_days"] = {
            "inactive": options.inactive_days, "silent_feed": options.silent_feed_days,
            "token_expiry": options.token_expiry_days, "token_unused": options.token_unused_days,
        }  # fmt: skip
        sections = runner.SECTIONS
        runs = []
        for i in range(args.runs):
            runner.SECTIONS = sections
            run = run_report(engine, options)
            runs.append(run)
            print(f"  run {i + 1}: {run['report_s']} s, {run['rows']:,} rows, first {run['first_row_s']} s", flush=True)
        results["runs"] = runs
        results["report_s_best"] = min(r["report_s"] for r in runs)
    finally:
        engine.dispose()
        if args.keep:
            print(f"kept: {url}")
        else:
            drop_database(name)
    out = ROOT / "bench" / "results" / f"report-postgresql-{args.people}x{args.workspaces}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results, out)


def _print_table(results: dict[str, Any], out: Path) -> None:
    best: dict[str, Any] = min(results["runs"], key=lambda r: r["report_s"])
    line: Callable[[str, Any], None] = lambda k, v: print(f"| {k} | {v} |")  # noqa: E731
    print(f"\n| measure ({results['people']:,} people x {results['workspaces']} workspaces, PostgreSQL) | value |")
    print("|---|---|")
    line("whole report, every partner, JSON Lines (best run)", f"{best['report_s']} s")
    line("time to first row", f"{best['first_row_s']} s")
    line("rows", f"{best['rows']:,} ({best['jsonl_mb']} MB)")
    for section, seconds in best["seconds_in_section_queries"].items():
        line(f"  {section}", f"{seconds} s, {best['rows_per_section'].get(section, 0):,} rows")
    line("peak RSS", f"{best['peak_rss_mb']} MB")
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
