"""Reading the report back from its wire formats, for comparison with the typed rows."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from broker.reports.rows import COLUMNS, ReportRow

VOLATILE = {"age_days", "inactive_days", "overdue_days", "age_seconds", "silent_days", "expires_in_days", "unused_days"}
"""Fields measured against the report's own clock: they differ between two runs."""


def steady(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def parse_csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return [steady(row) for row in reader]


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    assert text == "" or text.endswith("\n")
    return [steady(json.loads(line)) for line in text.splitlines()]


def as_csv(rows: list[ReportRow]) -> list[dict[str, str]]:
    return [steady(dict(zip(COLUMNS, row.flat(), strict=True))) for row in rows]


def as_jsonl(rows: list[ReportRow]) -> list[dict[str, Any]]:
    return [steady(row.as_json()) for row in rows]
