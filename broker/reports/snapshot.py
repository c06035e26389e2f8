"""One consistent read snapshot for a whole report, streamed, without holding SQLite's write lock.

The application's SQLite engine opens every transaction with ``BEGIN IMMEDIATE`` (writers queue
instead of failing to upgrade a lock); a report streaming a million rows to a slow client inside
such a transaction would stop every SCIM write meanwhile. Reports therefore read SQLite through a
second engine whose transactions are deferred: in WAL mode a reader never blocks a writer and sees
one snapshot until it ends. On PostgreSQL the report's transaction is ``REPEATABLE READ``, read
only, so every section sees the same moment, and rows come through a server-side cursor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.sql import Executable
from sqlmodel import create_engine

from broker.db import BUSY_TIMEOUT_PRAGMA, BUSY_TIMEOUT_SECONDS

__all__ = ["BATCH", "report_connection", "stream"]

BATCH = 1000
"""Rows fetched per round trip (``yield_per``)."""


@lru_cache(maxsize=8)
def _sqlite_reader(url: str) -> Engine:
    """A read engine on this SQLite file: deferred transactions, same busy timeout as the app's."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not pysqlite, decides where transactions start
        dbapi_connection.execute(BUSY_TIMEOUT_PRAGMA)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN DEFERRED")

    return engine


@contextmanager
def report_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in one read-only snapshot transaction, rolled back (nothing to keep) at the end."""
    if engine.dialect.name == "sqlite":
        reader = _sqlite_reader(engine.url.render_as_string(hide_password=False))
        with reader.connect() as connection:
            yield connection
        return
    options: dict[str, Any] = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    with engine.connect().execution_options(**options) as connection:
        yield connection


def stream(connection: Connection, statement: Executable) -> Iterator[Row[Any]]:
    """The statement's rows, ``BATCH`` at a time (a server-side cursor on PostgreSQL); closed when left early."""
    result = connection.execute(statement.execution_options(yield_per=BATCH))
    try:
        yield from result
    finally:
        result.close()
