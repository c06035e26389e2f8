"""Synapse (PyPI ``matrix-synapse``) as a real Matrix homeserver on 127.0.0.1, as standards §8.3 runs it.

Synapse lives in its own venv, ``.peers/synapse`` (git-ignored), because its pinned dependencies
(Twisted, its own pydantic range …) must not mix with Entente's. ``.ci/run`` installs it there; when
it is missing this module installs it the same way (under a file lock, so parallel workers install
it once) rather than skipping. The homeserver config is written by ``homeserver_config`` alone, so
later peers (the OIDC provider of issue 5) pass ``extra_config`` instead of editing YAML by hand::

    .peers/synapse/bin/python -m synapse.app.homeserver -c homeserver.yaml

It is ready when ``GET /_matrix/client/versions`` answers; an admin is then registered through the
shared-secret admin registration API (``/_synapse/admin/v1/register``, HMAC-SHA1 over the nonce),
which also returns the admin's access token. A homeserver that does not start, or dies during the
session, fails the session with its log; nothing is skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import sqlite3
import subprocess
import time
from base64 import b64encode
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from tests.peers.entente_process import START_TIMEOUT, free_port, stop_process

__all__ = [
    "SYNAPSE_PYTHON",
    "Synapse",
    "ensure_synapse_installed",
    "homeserver_config",
    "running_synapse",
    "synapse",
]

REPO = Path(__file__).resolve().parents[2]
SYNAPSE_VENV = REPO / ".peers" / "synapse"
SYNAPSE_PYTHON = SYNAPSE_VENV / "bin" / "python"
SYNAPSE_INSTALLED = SYNAPSE_VENV / "bin" / "synapse_homeserver"
"""pip writes the console scripts last: a venv whose install broke half-way lacks it and is installed again."""
SYNAPSE_START_TIMEOUT = 4 * START_TIMEOUT
"""A first start creates the whole SQLite schema, which takes far longer than Entente's start on 2 shared cores."""
INSTALL_TIMEOUT = 900.0
SERVER_NAME = "localhost"
ADMIN_LOCALPART = "entente-admin"
HIGH_RATE = {"per_second": 1000, "burst_count": 10000}
"""Rate limits high enough that no test meets one: tests exercise 429 with respx, not by hammering Synapse."""


def ensure_synapse_installed() -> None:
    """Install Synapse into ``.peers/synapse`` exactly as ``.ci/run`` does, unless it is already there."""
    if SYNAPSE_INSTALLED.exists():
        return
    SYNAPSE_VENV.parent.mkdir(parents=True, exist_ok=True)
    with (SYNAPSE_VENV.parent / "synapse.install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be installing right now
        if SYNAPSE_INSTALLED.exists():
            return
        python = os.environ.get("PYTHON", "python3")  # as .ci/run: the interpreter the venv is made from
        done = subprocess.run(  # noqa: S603 - fixed commands, our own paths
            [python, "-m", "venv", str(SYNAPSE_VENV)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT
        )
        if done.returncode == 0:
            done = subprocess.run(  # noqa: S603
                [str(SYNAPSE_VENV / "bin" / "pip"), "install", "-q", "matrix-synapse[oidc]"],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
        if done.returncode != 0 or not SYNAPSE_INSTALLED.exists():
            pytest.fail(
                f"installing matrix-synapse into {SYNAPSE_VENV} failed ({done.returncode})\n"
                f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
            )


def _signing_key() -> str:
    """A fresh ed25519 signing key in Synapse's file format: any 32 random bytes are a valid seed."""
    seed = b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"ed25519 a_{secrets.token_hex(2)} {seed}\n"


def homeserver_config(
    *, workdir: Path, port: int, shared_secret: str, extra_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The whole homeserver.yaml as a dict: loopback client listener only, SQLite, closed registration.

    ``extra_config`` is merged in last at the top level (e.g. ``oidc_providers``), so it wins.
    """
    config: dict[str, Any] = {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(workdir / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}},
        "media_store_path": str(workdir / "media_store"),
        "signing_key_path": str(workdir / "signing.key"),
        "macaroon_secret_key": secrets.token_urlsafe(32),
        "form_secret": secrets.token_urlsafe(32),
        "registration_shared_secret": shared_secret,
        "enable_registration": False,
        "report_stats": False,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "allow_public_rooms_over_federation": False,
        "url_preview_enabled": False,
        "presence": {"enabled": False},
        "rc_message": HIGH_RATE,
        "rc_registration": HIGH_RATE,
        "rc_registration_token_validity": HIGH_RATE,
        "rc_login": {"address": HIGH_RATE, "account": HIGH_RATE, "failed_attempts": HIGH_RATE},
        "rc_admin_redaction": HIGH_RATE,
        "rc_joins": {"local": HIGH_RATE, "remote": HIGH_RATE},
        "rc_joins_per_room": HIGH_RATE,
        "rc_invites": {"per_room": HIGH_RATE, "per_user": HIGH_RATE, "per_issuer": HIGH_RATE},
        "rc_3pid_validation": HIGH_RATE,
        "rc_room_creation": HIGH_RATE,
        "background_updates": {"sleep_enabled": False, "background_update_duration_ms": 1000, "min_batch_size": 100},
    }
    config.update(extra_config or {})
    return config


@dataclass(frozen=True)
class Synapse:
    """A running homeserver, its admin's access token and helpers for what tests check as a client."""

    base_url: str
    """``http://127.0.0.1:P`` (client API under ``/_matrix/client``, admin API under ``/_synapse/admin``)."""
    server_name: str
    admin_user_id: str
    admin_token: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        """Everything Synapse wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        """Fail with the log if the homeserver has exited."""
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"synapse exited with {code}\n--- log ---\n{self.log()}")

    def user_id(self, localpart: str) -> str:
        """The full Matrix user id of a local user."""
        return f"@{localpart}:{self.server_name}"

    def admin(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        """One request with the admin's token (``path`` starts with ``/_synapse`` or ``/_matrix``)."""
        return httpx.request(
            method,
            f"{self.base_url}{path}",
            json=json,
            timeout=30.0,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )

    def set_password(self, user_id: str, password: str) -> None:
        """Give an (SSO-only) account a password, for tests only, without logging its devices out."""
        response = self.admin(
            "PUT",
            f"/_synapse/admin/v2/users/{quote(user_id, safe='')}",
            json={"password": password, "logout_devices": False},
        )
        assert response.status_code == 200, response.text

    def login(self, user_id: str, password: str) -> httpx.Response:
        """``m.login.password`` as the user would: the raw response (200 with ``access_token``, or the refusal)."""
        return httpx.post(
            f"{self.base_url}/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user_id},
                "password": password,
            },
            timeout=30.0,
        )

    def login_token(self, user_id: str, password: str) -> str:
        """A fresh access token (a new device) for the user, failing the test if the login is refused."""
        response = self.login(user_id, password)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def whoami(self, access_token: str) -> httpx.Response:
        """``GET /account/whoami``: 200 while the token works, 401 ``M_UNKNOWN_TOKEN`` once it is revoked."""
        return httpx.get(
            f"{self.base_url}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=30.0,
        )

    def token_works(self, access_token: str) -> bool:
        """Whether the homeserver still accepts this access token."""
        return self.whoami(access_token).status_code == 200


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SYNAPSE_START_TIMEOUT
    last_error = "no attempt"
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            pytest.fail(
                f"synapse exited with {code} while starting\n--- log ---\n{log_path.read_text(errors='replace')}"
            )
        try:
            response = httpx.get(f"{base_url}/_matrix/client/versions", timeout=2.0)
            if response.status_code == 200:
                return
            last_error = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            last_error = repr(exc)
        time.sleep(0.25)
    process.kill()
    pytest.fail(
        f"synapse did not answer within {SYNAPSE_START_TIMEOUT:.0f}s ({last_error})\n"
        f"--- log ---\n{log_path.read_text(errors='replace')}"
    )


def _wait_background_updates(database: Path, log_path: Path) -> None:
    """Wait until the first start's background updates are done: until then some unique indexes are
    missing on SQLite (e.g. ``profiles_full_user_id_key_idx``, without which reactivating a user is a 500)."""
    deadline = time.monotonic() + SYNAPSE_START_TIMEOUT
    pending = -1
    while time.monotonic() < deadline:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            pending = int(db.execute("SELECT count(*) FROM background_updates").fetchone()[0])
        if pending == 0:
            return
        time.sleep(0.25)
    pytest.fail(f"synapse still had {pending} background updates pending\n--- log ---\n{log_path.read_text()}")


def _register_admin(base_url: str, shared_secret: str, log_path: Path) -> tuple[str, str]:
    """Register a server admin through the shared-secret API: its user id and access token."""
    url = f"{base_url}/_synapse/admin/v1/register"
    nonce = httpx.get(url, timeout=30.0).json()["nonce"]
    password = secrets.token_urlsafe(24)
    mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), ADMIN_LOCALPART.encode(), password.encode(), b"admin"]))
    response = httpx.post(
        url,
        json={"nonce": nonce, "username": ADMIN_LOCALPART, "password": password, "admin": True, "mac": mac.hexdigest()},
        timeout=30.0,
    )
    if response.status_code != 200:
        pytest.fail(f"registering the synapse admin failed: {response.text}\n--- log ---\n{log_path.read_text()}")
    body = response.json()
    return str(body["user_id"]), str(body["access_token"])


@contextmanager
def running_synapse(
    workdir: Path, *, extra_config: Mapping[str, Any] | None = None, port: int | None = None
) -> Iterator[Synapse]:
    """Start a homeserver in ``workdir`` on a free port (or ``port``), yield it with an admin, stop it after.

    ``port`` is for peers that must name Synapse's URL before it starts (an OIDC client's redirect URI).

    At exit it must still be running (else: failure with its log); it is then sent SIGTERM. A
    traceback in its log also fails: none of our requests may make Synapse answer 500.
    """
    ensure_synapse_installed()
    port = port or free_port()
    shared_secret = secrets.token_urlsafe(32)
    config = homeserver_config(workdir=workdir, port=port, shared_secret=shared_secret, extra_config=extra_config)
    Path(config["signing_key_path"]).write_text(_signing_key())
    config_path = workdir / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    base_url = f"http://127.0.0.1:{port}"
    log_path = workdir / "synapse.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed executable, our own arguments
            [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(config_path)],
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    died: int | None = None
    try:
        _wait_ready(process, base_url, log_path)
        _wait_background_updates(Path(config["database"]["args"]["database"]), log_path)
        admin_user_id, admin_token = _register_admin(base_url, shared_secret, log_path)
        yield Synapse(
            base_url=base_url,
            server_name=SERVER_NAME,
            admin_user_id=admin_user_id,
            admin_token=admin_token,
            log_path=log_path,
            process=process,
        )
    finally:
        died = stop_process(process)
    log = log_path.read_text(errors="replace")
    if died is not None:
        pytest.fail(f"synapse died during the tests (exit {died})\n--- log ---\n{log}")
    if "Traceback (most recent call last)" in log:
        pytest.fail(f"synapse logged an unhandled error (a 500 to a client)\n--- log ---\n{log}")


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """One homeserver ``localhost`` for the session, with a registered admin; stopped at session end."""
    with running_synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield server
