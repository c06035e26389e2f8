"""The `entente` console script run as an operator runs it: a subprocess on one database, checked for tracebacks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PG_URL_BASE, _create_pg_database, _drop_pg_database

__all__ = ["ENTENTE", "TOKEN_RE", "Cli", "Run", "cli", "cli_in_process"]

ENTENTE = str(Path(sys.executable).with_name("entente"))
TOKEN_RE = re.compile(r"^ent_scim_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


@dataclass
class Cli:
    """The console script bound to one database; ``in_process`` runs the same typer app without a subprocess."""

    url: str
    in_process: bool = False

    def _invoke(self, args: tuple[str, ...]) -> Run:
        """The typer app in this process: same parsing, output and exit codes, no interpreter start-up."""
        from typer.testing import CliRunner

        from broker.cli import app

        done = CliRunner().invoke(app, list(args), env={"ENTENTE_DATABASE_URL": self.url, "COLUMNS": "200"})
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            raise done.exception
        return Run(done.exit_code, done.stdout, done.stderr)

    def __call__(self, *args: str) -> Run:
        if self.in_process:
            return self._invoke(args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTENTE_")}
        env["ENTENTE_DATABASE_URL"] = self.url
        env["COLUMNS"] = "200"  # keep typer's usage boxes on one line each
        done = subprocess.run([ENTENTE, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
        result = Run(done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in result.stdout + result.stderr, result
        return result

    def ok(self, *args: str) -> Run:
        result = self(*args)
        assert result.code == 0, result
        assert result.stderr == "", result
        return result

    def fails(self, *args: str, message: str) -> Run:
        """Exit code 1 and exactly one line on stderr, ``error: <message>``, nothing on stdout."""
        result = self(*args)
        assert result.code == 1, result
        assert result.stderr == f"error: {message}\n", result
        assert result.stdout == "", result
        return result


def _fresh_cli(backend: str, tmp_path_factory: pytest.TempPathFactory, *, in_process: bool) -> Iterator[Cli]:
    """A fresh, empty database of ``backend``, migrated by `entente migrate` itself (always a real subprocess)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'entente.db'}"
        assert Cli(url).ok("migrate").stdout == "schema is up to date\n"
        yield Cli(url, in_process=in_process)
        return
    name = _create_pg_database()
    try:
        url = f"{PG_URL_BASE}/{name}"
        assert Cli(url).ok("migrate").stdout == "schema is up to date\n"
        yield Cli(url, in_process=in_process)
    finally:
        _drop_pg_database(name)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """The console script as a subprocess on a fresh database per backend."""
    yield from _fresh_cli(request.param, tmp_path_factory, in_process=False)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cli_in_process(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """The same commands in this process (no interpreter start-up per call) on a fresh database per backend."""
    yield from _fresh_cli(request.param, tmp_path_factory, in_process=True)
