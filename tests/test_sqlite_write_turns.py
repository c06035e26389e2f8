"""SQLite writers in one process take turns on a per-file lock (broker/db.py): handed over at commit,
rollback or close, and never held by a transaction that failed to begin."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from broker import db
from broker.db import create_db_engine
from broker.settings import Settings


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = create_db_engine(Settings(database_url=f"sqlite:///{tmp_path / 'turns.db'}"))
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    return engine


def _writer_waits_for(engine: Engine, release: threading.Event) -> tuple[threading.Thread, threading.Event]:
    """A second writer that starts while the first holds its turn; ``done`` is set once it committed."""
    done = threading.Event()

    def write() -> None:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (2)"))
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.2), "the second writer began while the first held the turn"
    release.set()
    return thread, done


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_the_turn_passes_when_the_holder_ends(sqlite_engine: Engine, end: str) -> None:
    release = threading.Event()
    connection = sqlite_engine.connect()
    transaction = connection.begin()
    connection.execute(text("INSERT INTO t VALUES (1)"))
    thread, done = _writer_waits_for(sqlite_engine, release)
    {"commit": transaction.commit, "rollback": transaction.rollback, "close": connection.close}[end]()
    assert done.wait(10), f"the second writer still waits after the holder's {end}"
    thread.join()
    connection.close()
    with sqlite_engine.connect() as check:
        rows = sorted(v for (v,) in check.execute(text("SELECT x FROM t")))
    assert rows == ([1, 2] if end == "commit" else [2])


def test_a_failed_begin_gives_the_turn_back(sqlite_engine: Engine, tmp_path: Path) -> None:
    outsider = db._SerialisedWriters(str(tmp_path / "turns.db"), isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")  # SQLite's own lock, held by a connection outside the turns
    try:
        with sqlite_engine.connect() as connection:
            connection.connection.dbapi_connection.execute("PRAGMA busy_timeout=50")  # no transaction yet
            with pytest.raises(OperationalError, match="database is locked"):
                connection.begin()
    finally:
        outsider.rollback()
        outsider.close()
    with sqlite_engine.begin() as connection:  # the turn was handed back: the next writer goes at once
        connection.execute(text("INSERT INTO t VALUES (3)"))


def test_no_turn_waits_longer_than_the_busy_timeout(sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_SECONDS", 0.2)
    holder = sqlite_engine.connect()
    holder.begin()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            with sqlite_engine.begin() as connection:
                connection.execute(text("INSERT INTO t VALUES (4)"))
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            failure.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(10)
    holder.close()
    assert failure and "no write turn within the busy timeout" in str(failure[0])
