"""`entente report stale`: each format parses back to the report's rows; options and errors."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from broker.reports.runner import stale_access
from broker.settings import Settings
from broker.types import utcnow
from tests.reports.conftest import Scenario, cli
from tests.reports.formats import as_csv, as_jsonl, parse_csv, parse_jsonl


def test_csv_parses_to_the_report(engine: Engine, settings: Settings, scenario: Scenario) -> None:
    s = scenario
    run = cli(settings, "report", "stale", "--partner", s.a.slug, "--format", "csv")
    assert (run.code, run.stderr) == (0, "")
    expected = as_csv(list(stale_access(engine, scope=s.scope(s.a), options=s.options(utcnow()))))
    assert parse_csv(run.stdout) == expected
    assert {row["section"] for row in expected} == {
        "orphaned_accounts", "inactive_people", "expired_grants", "pending_revocations", "scim_tokens",
    }  # fmt: skip


def test_json_lines_parse_to_the_report(engine: Engine, settings: Settings, scenario: Scenario) -> None:
    s = scenario
    run = cli(settings, "report", "stale", "--partner", s.b.slug, "--workspace", s.live.slug, "--format", "json")
    assert (run.code, run.stderr) == (0, "")
    expected = as_jsonl(list(stale_access(engine, scope=s.scope(s.b, s.live), options=s.options(utcnow()))))
    assert parse_jsonl(run.stdout) == expected
    assert [row["section"] for row in expected] == ["silent_feeds", "scim_tokens"]


def test_table_and_inactive_days(settings: Settings, scenario: Scenario) -> None:
    s = scenario
    run = cli(settings, "report", "stale", "--partner", s.a.slug, "--inactive-days", "110")
    assert (run.code, run.stderr) == (0, "")
    header, *lines = run.stdout.splitlines()
    assert header.split() == ["section", "partner", "workspace", "subject_id", "user_name", "ref", "status", "since",
                              "age_days", "detail"]  # fmt: skip
    inactive = [line for line in lines if line.startswith("inactive_people")]
    assert len(inactive) == 1 and s.people["ann"]["id"] in inactive[0] and "never_logged_in" in inactive[0]
    sections = [line.split()[0] if line else "" for line in lines]
    assert sections == [
        "orphaned_accounts", "", "inactive_people", "", "expired_grants", "", "pending_revocations",
        "pending_revocations", "pending_revocations", "", "scim_tokens", "scim_tokens",
    ]  # fmt: skip


def test_unknown_slugs_and_bad_days_are_one_line_errors(settings: Settings, scenario: Scenario) -> None:
    for args, message in [
        (("--partner", "no-such-partner"), "no partner 'no-such-partner'"),
        (("--workspace", "no-such-ws"), "no workspace 'no-such-ws'"),
        (("--inactive-days", "-1"), "inactive_days must be 0 or more days"),
    ]:
        run = cli(settings, "report", "stale", *args)
        assert (run.code, run.stdout, run.stderr) == (1, "", f"error: {message}\n")
