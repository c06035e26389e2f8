"""scim2-server (python-scim's in-memory SCIM 2.0 server, PyPI ``scim2-server``) as a real process.

Started through its console script next to the test interpreter, as standards §3.2 describes::

    scim2-server --hostname 127.0.0.1 --port P --bearer-token TOKEN

so its SCIM base URL is ``http://127.0.0.1:P/v2``. It keeps everything in memory and passes all
135 scim2-tester checks, which makes it a good oracle for filter, sort and pagination semantics.
The session-scoped ``scim2_server`` fixture is registered by ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.peers.entente_process import START_TIMEOUT, free_port, stop_process

__all__ = ["SCIM2_SERVER", "Scim2Server", "running_scim2_server", "scim2_server"]

SCIM2_SERVER = Path(sys.executable).with_name("scim2-server")


@dataclass(frozen=True)
class Scim2Server:
    """A running scim2-server and the bearer token it accepts."""

    base_url: str
    """``http://127.0.0.1:P/v2``."""
    token: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"scim2-server exited with {code}\n--- log ---\n{self.log()}")


def _wait_ready(server: Scim2Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no attempt"
    while time.monotonic() < deadline:
        server.assert_alive()
        try:
            response = httpx.get(
                f"{server.base_url}/ServiceProviderConfig",
                timeout=1.0,
                headers={"Authorization": f"Bearer {server.token}"},
            )
            if response.status_code == 200:
                return
            last_error = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    server.process.kill()
    pytest.fail(f"scim2-server did not answer within {START_TIMEOUT:.0f}s ({last_error})\n--- log ---\n{server.log()}")


@contextmanager
def running_scim2_server(workdir: Path) -> Iterator[Scim2Server]:
    """scim2-server on a free 127.0.0.1 port with a random bearer token, logging into ``workdir``."""
    if not SCIM2_SERVER.exists():
        pytest.fail(f"the scim2-server console script is not installed at {SCIM2_SERVER}: pip install -e '.[test]'")
    port = free_port()
    token = secrets.token_hex(24)  # hex: a leading "-" would read as an option to scim2-server
    log_path = workdir / "scim2-server.log"
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
        pytest.fail(f"scim2-server died during the tests (exit {died})\n--- log ---\n{server.log()}")


@pytest.fixture(scope="session")
def scim2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scim2Server]:
    """A scim2-server shared by the session's workspace tests; stopped at session end."""
    with running_scim2_server(tmp_path_factory.mktemp("scim2-server")) as server:
        yield server
