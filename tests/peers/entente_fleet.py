"""Entente processes a test can kill, restart and run side by side, for the fault-tolerance tests.

``tests/peers/entente_process.py`` runs one well-behaved ``entente serve`` per session; the tests of
``tests/lifecycle/test_faults.py`` need more: ``kill -9`` at a random moment and a restart on the same
port and database, two processes (``entente serve`` and ``entente worker``) on one PostgreSQL, and
delivery settings (lease, backoff, poll) tuned through ``ENTENTE_*`` variables. Everything still runs
through the console scripts, as an operator would.

- ``fresh_database(backend, workdir)``: a new SQLite file or a new PostgreSQL database, dropped after.
- ``EntenteNode``: one ``entente serve`` (or ``entente worker``) process with ``start`` / ``kill``
  (SIGKILL) / ``stop`` (SIGTERM); each start appends to the node's log.
- ``fresh_scim2_server(workdir)``: a scim2-server of one's own (its state is only in memory).
- ``scalar(database_url, sql)``: read the database directly (outbox depth, receipts, audit).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.peers.entente_process import (
    ENTENTE,
    START_TIMEOUT,
    _postgres_database,
    free_port,
    run_entente,
    stop_process,
)
from tests.peers.scim2_server_process import SCIM2_SERVER, Scim2Server, _wait_ready

__all__ = [
    "EntenteNode",
    "entente_env",
    "fresh_database",
    "fresh_scim2_server",
    "rows",
    "run_entente",
    "scalar",
]


def entente_env(database_url: str, **settings: object) -> dict[str, str]:
    """The caller's environment without its own ENTENTE_* settings, plus these (``delivery_lease_seconds=2``
    becomes ``ENTENTE_DELIVERY_LEASE_SECONDS=2``) and a fresh sealing key shared by every process using it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTENTE_")}
    env.update(
        ENTENTE_DATABASE_URL=database_url,
        ENTENTE_SECRET_KEY=Fernet.generate_key().decode(),
        ENTENTE_DATABASE_POOL_SIZE="4",
        PYTHONUNBUFFERED="1",
    )
    env.update({f"ENTENTE_{name.upper()}": str(value) for name, value in settings.items()})
    return env


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """A database URL nobody else uses: ``sqlite`` (a file in ``workdir``) or ``postgresql`` (dropped at exit)."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'entente.db'}"
        return
    with _postgres_database() as url:
        yield url


def _engine(database_url: str) -> Any:
    return create_engine(database_url, poolclass=NullPool)


def rows(database_url: str, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """Every row of a query on the database, read from the test process (one short connection)."""
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def scalar(database_url: str, sql: str, **params: object) -> Any:
    """The first column of the first row of a query."""
    found = rows(database_url, sql, **params)
    return found[0][0] if found else None


class EntenteNode:
    """One Entente process on a fixed port (``serve``) or none (``worker``), restartable on the same database.

    ``start`` waits until the process answers /healthz (serve) or says it runs (worker). ``kill`` is a
    ``kill -9``; ``stop`` a SIGTERM. Every start appends to ``log_path``, with a marker line.
    """

    def __init__(self, *, env: Mapping[str, str], workdir: Path, command: str = "serve", name: str = "") -> None:
        self.command = command
        self.port = free_port() if command == "serve" else 0
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "ENTENTE_PUBLIC_BASE_URL": self.root_url}
        self.name = name or f"{command}-{self.port or secrets.token_hex(3)}"
        self.log_path = workdir / f"entente-{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        """Every process id this node has had, oldest first."""
        self.kills = 0

    @property
    def base_url(self) -> str:
        """The SCIM base URL, ``http://127.0.0.1:P/scim/v2``."""
        return f"{self.root_url}/scim/v2"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start the process and wait until it serves (or, for a worker, until it says it runs)."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting for it (then ``wait_ready``): several can start at once."""
        assert self.process is None or self.process.poll() is not None, "already running"
        args = [str(ENTENTE), self.command]
        if self.command == "serve":
            args += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log_file:
            log_file.write(f"\n=== start #{len(self.pids) + 1} at {time.time():.3f} ===\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(  # noqa: S603 - fixed executable, our own arguments
                args, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.pids.append(self.process.pid)

    def wait_ready(self) -> None:
        """Wait until the last launched process serves /healthz (serve) or says it runs (worker)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT * 2  # a start on a busy machine: migrations, imports
        marker = f"=== start #{len(self.pids)} "
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                pytest.fail(f"entente {self.command} exited with {code} at start\n--- log ---\n{self.log()}")
            if self.command == "serve":
                try:
                    if httpx.get(f"{self.root_url}/healthz", timeout=1.0).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            elif "delivery worker running" in self.log().split(marker, 1)[-1]:
                return
            time.sleep(0.1)
        self.process.kill()
        self.process.wait()
        pytest.fail(f"entente {self.command} not ready within {START_TIMEOUT * 2:.0f}s\n--- log ---\n{self.log()}")

    def kill(self) -> None:
        """``kill -9`` the process (it must still be running) and reap it."""
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"entente {self.command} had died on its own ({self.process.returncode})\n{self.log()}")
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code if the process had already died on its own, else None."""
        if self.process is None:
            return None
        return stop_process(self.process)

    def assert_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            pytest.fail(f"entente {self.command} is not running\n--- log ---\n{self.log()}")

    def cli(self, *args: str) -> str:
        """``entente ARGS`` against this node's database and key (stdout; a failure shows both streams)."""
        return run_entente(*args, env=self.env)


@contextmanager
def fresh_scim2_server(workdir: Path) -> Iterator[Scim2Server]:
    """A scim2-server of one's own on a free port (empty: it keeps everything in memory); stopped at exit."""
    if not SCIM2_SERVER.exists():
        pytest.fail(f"the scim2-server console script is not installed at {SCIM2_SERVER}: pip install -e '.[test]'")
    port = free_port()
    token = secrets.token_hex(24)
    log_path = workdir / f"scim2-server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed executable, our own arguments
            [str(SCIM2_SERVER), "--hostname", "127.0.0.1", "--port", str(port), "--bearer-token", token],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Scim2Server(base_url=f"http://127.0.0.1:{port}/v2", token=token, log_path=log_path, process=process)
    died: int | None = None
    try:
        _wait_ready(server)
        yield server
    finally:
        died = stop_process(process)
    if died is not None:
        pytest.fail(f"scim2-server died during the test (exit {died})\n--- log ---\n{server.log()}")
