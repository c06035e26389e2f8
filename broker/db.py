"""Engine and session factory for SQLite (embedded default) and PostgreSQL; migrations through Alembic."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlmodel import Session, create_engine

from broker.settings import Settings

__all__ = [
    "BUSY_TIMEOUT_PRAGMA",
    "BUSY_TIMEOUT_SECONDS",
    "SessionDep",
    "create_db_engine",
    "get_session",
    "migrate",
    "is_sqlite",
]

_ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"
BUSY_TIMEOUT_SECONDS = 30.0
"""How long a SQLite writer waits for the file (busy timeout) and for its turn, then fails as SQLite would."""
BUSY_TIMEOUT_PRAGMA = f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000:.0f}"
"""The same wait for SQLite's own busy handler, on every connection the app or a report reader opens."""


def is_sqlite(url: str) -> bool:
    """Whether a database URL names SQLite, which needs its own connection set-up."""
    return make_url(url).get_backend_name() == "sqlite"


def _unicode_lower(value: Any) -> Any:
    """SQLite's built-in lower() folds ASCII only; this makes it agree with PostgreSQL and Python."""
    return value.lower() if isinstance(value, str) else value


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, a busy timeout, Unicode lower(), and real transactions with SAVEPOINTs.

    pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; SQLAlchemy's documented
    recipe takes transaction control back. BEGIN IMMEDIATE takes the write lock up front, so two
    writers queue on the busy timeout instead of failing to upgrade a read lock.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(BUSY_TIMEOUT_PRAGMA)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        dbapi_connection: _SerialisedWriters = connection.connection.dbapi_connection
        dbapi_connection.take_write_turn()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_connection.end_write_turn()
            raise


_WRITE_TURNS: dict[str, threading.Lock] = {}
_WRITE_TURNS_GUARD = threading.Lock()


class _SerialisedWriters(sqlite3.Connection):
    """A pysqlite connection whose write transactions take turns on a per-file lock in this process.

    SQLite lets one writer in at a time; a ``BEGIN IMMEDIATE`` that finds the file locked sleeps in
    its busy handler (1, 2, 5 … up to 100 ms at a time) and may oversleep the holder's commit by tens
    of milliseconds, which made the p99 of 16 concurrent writers in one process over a second. Taking
    turns on a lock first hands the file over the moment the holder commits or rolls back. Writers in
    other processes still meet SQLite's own lock and busy timeout; an in-memory database has no lock.
    """

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        name = str(database)
        self._turn: threading.Lock | None = None
        if name and name != ":memory:" and not name.startswith("file::memory:"):
            key = str(Path(name).resolve())
            with _WRITE_TURNS_GUARD:
                self._turn = _WRITE_TURNS.setdefault(key, threading.Lock())
        self._holding = False

    def take_write_turn(self) -> None:
        if self._turn is None or self._holding:
            return
        if not self._turn.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise sqlite3.OperationalError("database is locked (no write turn within the busy timeout)")
        self._holding = True

    def end_write_turn(self) -> None:
        if self._holding and self._turn is not None:
            self._holding = False
            self._turn.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_write_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_write_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.end_write_turn()


_PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "entente.idle_since"  #: key in a pooled connection's ``info``


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, for connections that sat idle in the pool for over a second.

    The stock pre-ping is a round trip before every checkout: a sixth of a short write's database
    time. A connection back in use within a second is not worth proving alive again; one idle for
    longer (a database restart, a proxy's idle timeout) is pinged, and a dead one replaced before
    the request sees it, as pre-ping does.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < _PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("connection found dead after idling in the pool") from exc


def create_db_engine(settings: Settings) -> Engine:
    """One engine per process; SQLite gets its pragmas, PostgreSQL a pool."""
    url = settings.database_url
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_SECONDS, "factory": _SerialisedWriters},
        )
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, pool_size=settings.database_pool_size, max_overflow=settings.database_pool_size)
    _ping_when_idle(engine)
    return engine


def migrate(settings: Settings) -> None:
    """Bring the schema to the newest Alembic revision: the only way Entente's tables are made."""
    from alembic.config import Config

    from alembic import command

    config = Config()
    config.set_main_option("script_location", str(_ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def get_session(request: Request) -> Iterator[Session]:
    """A request-scoped session; services commit, an exception rolls back."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
