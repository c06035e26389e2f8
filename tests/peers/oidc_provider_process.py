"""npm ``oidc-provider`` 9.13.3 (panva, OpenID-certified) as a partner's OIDC IdP on 127.0.0.1 (standards §8.1).

``tests/peers/oidc_provider/`` holds its ``package.json`` (the version pinned), ``package-lock.json``
and ``idp.mjs``; ``npm ci`` installs it into that folder's git-ignored ``node_modules`` (``.ci/run``
does; when missing, this module does it the same way, under a file lock, rather than skipping)::

    PORT=P ADMIN_TOKEN=T node tests/peers/oidc_provider/idp.mjs

It is ready when its discovery document answers. Every Entente IdP connection registers its own
client with its exact redirect URI through dynamic client registration (RFC 7591, ``/reg``, with
the admin token as initial access token); test accounts (``sub`` and claims) are put through the
script's test-only ``PUT /test/accounts/{sub}``. The login is its devInteractions form, driven by
``tests/federation/browser.py``. A provider that does not start, or dies during the session, fails
the session with its log; nothing is skipped.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.peers.entente_process import START_TIMEOUT, free_port, stop_process

__all__ = ["OIDC_PROVIDER_DIR", "OidcProvider", "ensure_oidc_provider_installed", "oidc_provider"]

OIDC_PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
INSTALLED = OIDC_PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json"
INSTALL_TIMEOUT = 300.0


def ensure_oidc_provider_installed() -> None:
    """``npm ci`` in ``tests/peers/oidc_provider`` exactly as ``.ci/run`` does, unless already installed."""
    if INSTALLED.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not on PATH: Node.js 20+ is needed to run oidc-provider, the partner IdP of these tests")
    with (OIDC_PROVIDER_DIR.parent / ".oidc_provider.install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be installing right now
        if INSTALLED.exists():
            return
        done = subprocess.run(  # noqa: S603 - fixed command, our own folder
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=OIDC_PROVIDER_DIR,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        if done.returncode != 0 or not INSTALLED.exists():
            pytest.fail(f"npm ci in {OIDC_PROVIDER_DIR} failed ({done.returncode})\n{done.stdout}\n{done.stderr}")


@dataclass(frozen=True)
class OidcProvider:
    """A running oidc-provider and the helpers tests use to configure it."""

    issuer: str
    """``http://127.0.0.1:P``: also its base URL."""
    admin_token: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"oidc-provider exited with {code}\n--- log ---\n{self.log()}")

    def register_client(self, redirect_uris: list[str], **metadata: Any) -> tuple[str, str]:
        """A confidential code-flow client (RFC 7591): its ``client_id`` and ``client_secret``."""
        body = {
            "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            **metadata,
        }
        response = httpx.post(
            f"{self.issuer}/reg", json=body, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10.0
        )
        assert response.status_code == 201, response.text
        client = response.json()
        return str(client["client_id"]), str(client["client_secret"])

    def put_account(self, sub: str, **claims: Any) -> None:
        """Create or replace the account ``sub`` (the devInteractions login name) with these claims."""
        response = httpx.put(
            f"{self.issuer}/test/accounts/{quote(sub, safe='')}",
            json=claims,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10.0,
        )
        assert response.status_code == 204, response.text


def _wait_ready(provider: OidcProvider) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no attempt"
    while time.monotonic() < deadline:
        provider.assert_alive()
        try:
            response = httpx.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=1.0)
            if response.status_code == 200:
                return
            last_error = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    provider.process.kill()
    pytest.fail(f"oidc-provider did not answer within {START_TIMEOUT:.0f}s ({last_error})\n{provider.log()}")


@contextmanager
def running_oidc_provider(workdir: Path) -> Iterator[OidcProvider]:
    """Start idp.mjs on a free port, yield it, stop it; it must still be running at the end."""
    ensure_oidc_provider_installed()
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: Node.js 20+ is needed to run oidc-provider")
    port = free_port()
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "PORT": str(port), "ADMIN_TOKEN": token, "NODE_ENV": "development"}
    log_path = workdir / "oidc-provider.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed executable, our own script
            [node, str(OIDC_PROVIDER_DIR / "idp.mjs")],
            cwd=OIDC_PROVIDER_DIR,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    provider = OidcProvider(issuer=f"http://127.0.0.1:{port}", admin_token=token, log_path=log_path, process=process)
    died: int | None = None
    try:
        _wait_ready(provider)
        yield provider
    finally:
        died = stop_process(process)
    if died is not None:
        pytest.fail(f"oidc-provider died during the tests (exit {died})\n--- log ---\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One oidc-provider for the session; stopped at session end."""
    with running_oidc_provider(tmp_path_factory.mktemp("oidc-provider")) as provider:
        yield provider
