"""What every benchmark here shares: ports, throwaway databases, processes, percentiles, a result's git state."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg

from bench.profiling import hottest_frames

__all__ = [
    "BIN",
    "PG_ADMIN",
    "PG_URL",
    "ROOT",
    "Profiler",
    "cpu_seconds",
    "create_pg_database",
    "drop_database",
    "entente",
    "free_port",
    "git_state",
    "new_database",
    "pct",
    "process_tree",
    "stop",
    "summary",
    "wait_http",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository: the git state is read here, results go below it."""
BIN = Path(sys.executable).parent
"""The virtualenv's scripts (``entente``, ``py-spy``, ``scim2-server``): the ones this interpreter installed."""
PG_ADMIN = os.environ.get("ENTENTE_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
"""libpq DSN of a database to create and drop others from; the same variable as the tests'."""
PG_URL = os.environ.get("ENTENTE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
"""SQLAlchemy URL of that server without a database name; the same variable as the tests'."""
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now, so that concurrent runs and other work never collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str,
    process: subprocess.Popen[bytes],
    what: str,
    *,
    log: Path | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> None:
    """Return once ``url`` answers below 500, so no phase times a server still starting; raise if
    ``process`` exits or ``timeout`` passes first (with the tail of ``log``, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = f"; log {log}:\n{log.read_text()[-3000:]}" if log is not None else ""
            raise RuntimeError(f"{what} exited with {process.returncode}{tail}")
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s" + (f" (log {log})" if log else ""))


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate, then kill after 30 s, and reap, so no server outlives its run; ``None`` or an ended
    process is left alone (idempotent)."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants now, so that CPU is counted for every worker (``entente serve
    --workers N`` forks; one worker does not)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            own, rest = stat.read_text().split(" ", 1)
        except OSError:  # the process ended meanwhile
            continue
        parent[int(own)] = int(rest.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sorted(tree)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used so far (Linux /proc): a cost per request that
    a machine shared with other work distorts far less than wall-clock rates; ended processes count 0."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


class Profiler:
    """``py-spy record --gil`` on one process from now until ``finish``, so a report can say where the
    server's time went; sampling slows the server, so a profiled run is for the profile, not the figures."""

    def __init__(self, path: Path, pid: int, *, rate: int, idle: bool = False, subprocesses: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)  # py-spy writes nothing into a missing folder
        options = ["--idle"] * idle + ["--subprocesses"] * subprocesses
        self.process = subprocess.Popen(  # noqa: S603
            [str(BIN / "py-spy"), "record", "--gil", *options, "-r", str(rate), "-f", "raw", "-o", str(path)]
            + ["-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self, top: int) -> dict[str, Any] | None:
        """Stop sampling; the ``top`` hottest frames (``hottest_frames``), ``None`` if py-spy wrote nothing."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return hottest_frames(self.path, top)


def create_pg_database(prefix: str, *, url_base: str = PG_URL) -> tuple[str, str]:
    """A new, empty PostgreSQL database named ``<prefix>_<random>``, so runs never share state:
    (its SQLAlchemy URL, its name for ``drop_database``)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{url_base}/{name}", name


def new_database(kind: str, scratch: Path, prefix: str, *, url_base: str = PG_URL) -> tuple[str, str | None]:
    """A fresh database for one run: ``entente.db`` in ``scratch`` for ``sqlite`` (name ``None``: the
    scratch folder is the cleanup), else ``create_pg_database(prefix)``. Returns (URL, name)."""
    if kind == "sqlite":
        return f"sqlite:///{scratch}/entente.db", None
    return create_pg_database(prefix, url_base=url_base)


def drop_database(name: str | None) -> None:
    """Drop a database ``create_pg_database`` made, even with sessions still open; ``None`` does nothing."""
    if name:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def entente(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    """Run the ``entente`` CLI as an operator would, so setup goes through the shipped commands: its
    stdout; a non-zero exit raises with its stderr."""
    done = subprocess.run(  # noqa: S603 - our console script, our arguments
        [str(BIN / "entente"), *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"entente {' '.join(args[:3])} failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list: always a measured value, never interpolated."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def summary(values: list[float], *, p50: Literal["nearest-rank", "median"] = "nearest-rank") -> dict[str, float]:
    """n, p50, p90, p99 (nearest rank), max and mean; ``{"n": 0}`` for no values. ``p50="median"`` takes
    ``statistics.median`` (the mean of the middle two for an even n), as login's published figures do."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": statistics.median(values) if p50 == "median" else pct(values, 0.50),
        "p90": pct(values, 0.90),
        "p99": pct(values, 0.99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (other work in progress)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603, S607
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": sorted(git("status", "--porcelain").splitlines())}
