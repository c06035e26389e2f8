"""Entente as a real process, driven only through its console script, as an operator runs it.

``entente serve --host 127.0.0.1 --port P`` runs on a free loopback port with its configuration in
``ENTENTE_*`` environment variables (the serve command applies the migrations itself); partners and
their SCIM tokens are made with ``entente partner add`` / ``entente partner token`` against the same
database while it serves. Third-party SCIM tools then talk to it over real HTTP, which is what
"real peer" means here: no ASGI transport, no in-process app, no mocks.

The ``entente_process`` fixture (session-scoped, one process per database backend, parametrised
like ``tests/conftest.py``'s ``database_url``) is registered for the whole suite by
``pytest_plugins`` in ``tests/conftest.py``; test modules import only the types from here.

A process that does not come up, dies during the session, or logs a traceback fails the session
with its log; nothing is skipped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import PG_ADMIN_DSN, PG_URL_BASE

__all__ = [
    "ENTENTE",
    "EntenteProcess",
    "PartnerCredentials",
    "entente_process",
    "free_port",
    "run_entente",
    "running_entente",
]

ENTENTE = Path(sys.executable).with_name("entente")
"""The installed console script (``.venv/bin/entente``), next to the interpreter running pytest."""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def stop_process(process: subprocess.Popen[bytes]) -> int | None:
    """Stop a peer at teardown: its exit code if it had already died on its own, else None."""
    died = process.poll()
    if died is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return died


CLI_TIMEOUT = 60.0
SPARE_PARTNERS = 2
"""Enforcing ``<slug>.example.com`` partners made up front, at the same time as the first one: each
CLI call is a Python start-up (about a second), and the scim2-client and oracle modules need one each."""


def free_port() -> int:
    """A port nobody listens on at 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(database_url: str, public_base_url: str) -> dict[str, str]:
    """The caller's environment without any ENTENTE_* setting of its own, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTENTE_")}
    env.update(
        ENTENTE_DATABASE_URL=database_url,
        ENTENTE_PUBLIC_BASE_URL=public_base_url,
        ENTENTE_DATABASE_POOL_SIZE="4",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_entente(*args: str, env: dict[str, str]) -> str:
    """Run ``entente ARGS``; its stdout, or a test failure showing both streams."""
    if not ENTENTE.exists():
        pytest.fail(f"the entente console script is not installed at {ENTENTE}: pip install -e '.[test]'")
    done = subprocess.run(  # noqa: S603 - fixed executable, our own arguments
        [str(ENTENTE), *args], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            f"`entente {' '.join(args)}` exited {done.returncode}\n"
            f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        )
    return done.stdout


@dataclass(frozen=True)
class PartnerCredentials:
    """A partner made through the CLI, with the bearer token it printed."""

    slug: str
    domain: str
    token: str


@dataclass(frozen=True)
class EntenteProcess:
    """A running ``entente serve`` and the first partner made on it."""

    base_url: str
    """SCIM base URL, ``http://127.0.0.1:P/scim/v2``."""
    token: str
    """Bearer token of ``slug``."""
    slug: str
    domain: str
    """The partner's verified domain; the partner is warn-only, so other domains are accepted too."""
    root_url: str
    database_url: str
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    spares: list[PartnerCredentials] = field(default_factory=list)
    """Unused enforcing ``.example.com`` partners, handed out once each by ``add_partner``."""

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def add_partner(self, *, prefix: str = "peer", warn_only: bool = True, tld: str = "test") -> PartnerCredentials:
        """Another partner (tenant) on the same running server, made with the CLI, with its own token.

        Its verified domain is ``<slug>.<tld>``. ``warn_only`` (``--warn-only``) accepts users outside
        it with an audited warning: third-party tools fill emails and userNames with random values
        that can never lie in a domain we verified. Clients that validate emails themselves
        (scim2-client, through email-validator) refuse RFC 6761 names such as ``.test``: pass
        ``tld="example.com"`` for those. Such an enforcing partner comes from the spares made at
        start-up while they last (``prefix`` then does not apply); any other is made now.
        """
        if not warn_only and tld == "example.com" and self.spares:
            return self.spares.pop()
        return _make_partner(self.env, prefix=prefix, warn_only=warn_only, tld=tld)

    def assert_alive(self) -> None:
        """Fail with the log if the process has exited."""
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"entente serve exited with {code}\n--- server log ---\n{self.log()}")


def _make_partner(env: dict[str, str], *, prefix: str, warn_only: bool, tld: str) -> PartnerCredentials:
    slug = f"{prefix}-{uuid.uuid4().hex[:10]}"
    domain = f"{slug}.{tld}"
    add = ["partner", "add", slug, "--name", f"Peer test {slug}", "--domain", domain]
    run_entente(*add, *(["--warn-only"] if warn_only else []), env=env)
    out = run_entente("partner", "token", slug, "--expires", "1d", "--label", "peer tests", env=env)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("ent_scim_"):
        pytest.fail(f"`entente partner token` printed no token on its last line:\n{out}")
    return PartnerCredentials(slug=slug, domain=domain, token=lines[-1])


def _wait_healthy(process: subprocess.Popen[bytes], root_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no attempt"
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            pytest.fail(
                f"entente serve exited with {code} before answering /healthz\n"
                f"--- server log ---\n{log_path.read_text(errors='replace')}"
            )
        try:
            response = httpx.get(f"{root_url}/healthz", timeout=1.0)
            if response.status_code == 200:
                return
            last_error = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    process.kill()
    pytest.fail(
        f"entente serve did not answer /healthz within {START_TIMEOUT:.0f}s ({last_error})\n"
        f"--- server log ---\n{log_path.read_text(errors='replace')}"
    )


@contextmanager
def running_entente(*, database_url: str, workdir: Path) -> Iterator[EntenteProcess]:
    """Serve Entente on a free port with this database, make one warn-only partner, stop it at exit.

    At exit the process must still be running (else: failure with its log), is sent SIGTERM and
    waited for; a traceback anywhere in its log also fails, since a SCIM peer must never see a 500.
    """
    port = free_port()
    root_url = f"http://127.0.0.1:{port}"
    env = _environment(database_url, root_url)
    log_path = workdir / f"entente-serve-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed executable, our own arguments
            [str(ENTENTE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    died: int | None = None
    try:
        _wait_healthy(process, root_url, log_path)
        specs = [(True, "test")] + [(False, "example.com")] * SPARE_PARTNERS
        with ThreadPoolExecutor(len(specs)) as pool:
            partner, *spares = pool.map(
                lambda spec: _make_partner(env, prefix="peer", warn_only=spec[0], tld=spec[1]), specs
            )
        yield EntenteProcess(
            base_url=f"{root_url}/scim/v2",
            token=partner.token,
            slug=partner.slug,
            domain=partner.domain,
            root_url=root_url,
            database_url=database_url,
            log_path=log_path,
            env=env,
            process=process,
            spares=spares,
        )
    finally:
        died = stop_process(process)
    log = log_path.read_text(errors="replace")
    if died is not None:
        pytest.fail(f"entente serve died during the tests (exit {died})\n--- server log ---\n{log}")
    if "Traceback (most recent call last)" in log:
        pytest.fail(f"entente serve logged an unhandled error\n--- server log ---\n{log}")


@contextmanager
def _postgres_database() -> Iterator[str]:
    name = f"entente_peer_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL_BASE}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def entente_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EntenteProcess]:
    """``entente serve`` on a fresh SQLite file or a fresh PostgreSQL database ``entente_peer_<hex>``."""
    workdir = tmp_path_factory.mktemp(f"entente-{request.param}")
    if request.param == "sqlite":
        with running_entente(database_url=f"sqlite:///{workdir / 'entente.db'}", workdir=workdir) as server:
            yield server
        return
    with _postgres_database() as url, running_entente(database_url=url, workdir=workdir) as server:
        yield server
