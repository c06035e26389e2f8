"""The report's wire formats, streamed: CSV, JSON Lines, and a fixed-width table for terminals.

Each renderer turns an iterator of rows into an iterator of text chunks, a few hundred rows per
chunk (one write or one HTTP chunk each), so a million rows never sit in memory together. CSV and
the table use the shared flat columns (``broker.reports.rows.COLUMNS``); JSON Lines carries every
typed field of each row, headed by ``section``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum

from broker.reports.rows import COLUMNS, ReportRow

__all__ = ["CHUNK_ROWS", "ReportFormat", "render"]

CHUNK_ROWS = 500


class ReportFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    """JSON Lines: one JSON object per line."""


def _chunked(rows: Iterable[ReportRow], line: Callable[[ReportRow], str]) -> Iterator[str]:
    buffer: list[str] = []
    for row in rows:
        buffer.append(line(row))
        if len(buffer) >= CHUNK_ROWS:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


def _csv(rows: Iterable[ReportRow]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")

    def line(row: ReportRow) -> str:
        out.seek(0)
        out.truncate()
        writer.writerow(row.flat())
        return out.getvalue()

    writer.writerow(COLUMNS)
    yield out.getvalue()
    yield from _chunked(rows, line)


def _jsonl(rows: Iterable[ReportRow]) -> Iterator[str]:
    yield from _chunked(rows, lambda row: json.dumps(row.as_json(), ensure_ascii=False, separators=(",", ":")) + "\n")


_WIDTHS = (19, 16, 16, 36, 32, 28, 15, 32, 8, 0)
"""Column widths of the table (the last, ``detail``, is not padded)."""


def _cell(value: str, width: int) -> str:
    if not width:
        return value
    return value.ljust(width) if len(value) <= width else value[: width - 1] + "…"


def _table(rows: Iterable[ReportRow]) -> Iterator[str]:
    """Columns of fixed width (a stream cannot measure its rows first), a blank line between sections."""
    header = " ".join(_cell(name, width) for name, width in zip(COLUMNS, _WIDTHS, strict=True)).rstrip() + "\n"
    yield header
    previous: tuple[str, str] | None = None

    def line(row: ReportRow) -> str:
        nonlocal previous
        group = (row.partner, row.section.value)
        gap = "\n" if previous is not None and previous != group else ""
        previous = group
        return gap + " ".join(_cell(v, w) for v, w in zip(row.flat(), _WIDTHS, strict=True)).rstrip() + "\n"

    yield from _chunked(rows, line)


_RENDERERS: dict[ReportFormat, Callable[[Iterable[ReportRow]], Iterator[str]]] = {
    ReportFormat.TABLE: _table,
    ReportFormat.CSV: _csv,
    ReportFormat.JSON: _jsonl,
}


def render(rows: Iterable[ReportRow], fmt: ReportFormat) -> Iterator[str]:
    """The rows as text chunks in ``fmt``; lazy: nothing is read before the first chunk is asked for."""
    return _RENDERERS[fmt](rows)
