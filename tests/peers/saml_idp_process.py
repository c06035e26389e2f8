"""pysaml2 in the IdP role (signing with Debian's xmlsec1) as a partner's SAML IdP on 127.0.0.1 (standards §8.2).

``tests/peers/saml_idp/idp.py`` runs as its own process, as a partner's IdP would::

    PORT=P ADMIN_TOKEN=T KEY_FILE=idp.key CERT_FILE=idp.crt python tests/peers/saml_idp/idp.py

Its key and self-signed certificate are made for the session here (RSA 2048, ``cryptography``), so
the tests can also sign forged assertions with the IdP's own key. It is ready when its metadata
answers. Each Entente SAML connection registers its SP metadata (``PUT /test/sp``, fetched from
Entente's metadata endpoint) and its users (``PUT /test/users/{login}``). A peer that does not
start, or dies during the session, fails the session with its log; nothing is skipped, and a
missing ``xmlsec1`` fails with the command that installs it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.peers.entente_process import START_TIMEOUT, free_port, stop_process

__all__ = ["SamlIdp", "make_key_pair", "saml_idp"]

IDP_SCRIPT = Path(__file__).resolve().parent / "saml_idp" / "idp.py"


def make_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """An RSA 2048 key and a self-signed certificate for it (PEM files ``name.key``, ``name.crt``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@dataclass(frozen=True)
class SamlIdp:
    """A running pysaml2 IdP, its signing key pair, and the helpers tests use to configure it."""

    base_url: str
    admin_token: str
    key_file: Path
    cert_file: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def entity_id(self) -> str:
        return f"{self.base_url}/metadata"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/metadata"

    def metadata(self) -> str:
        response = httpx.get(self.metadata_url, timeout=10.0)
        assert response.status_code == 200, response.text
        return response.text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"the SAML IdP exited with {code}\n--- log ---\n{self.log()}")

    def _put(self, path: str, **kwargs: Any) -> None:
        response = httpx.put(
            f"{self.base_url}{path}", headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10.0, **kwargs
        )
        assert response.status_code == 204, response.text

    def register_sp(self, sp_metadata: str) -> None:
        """Trust an SP (its entity ID and ACS URL) from its metadata."""
        self._put("/test/sp", content=sp_metadata.encode())

    def put_user(self, login: str, *, name_id: str, name_id_format: str | None = None, **attributes: list[str]) -> None:
        """The user the login form accepts as ``login``: its NameID and attributes (friendly names)."""
        body: dict[str, Any] = {"name_id": name_id, "attributes": attributes}
        if name_id_format is not None:
            body["name_id_format"] = name_id_format
        self._put(f"/test/users/{quote(login, safe='')}", json=body)


def _wait_ready(idp: SamlIdp) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no attempt"
    while time.monotonic() < deadline:
        idp.assert_alive()
        try:
            if httpx.get(idp.metadata_url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    idp.process.kill()
    pytest.fail(f"the SAML IdP did not answer within {START_TIMEOUT:.0f}s ({last_error})\n{idp.log()}")


@pytest.fixture(scope="session")
def saml_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamlIdp]:
    """One pysaml2 IdP process for the session; stopped at session end."""
    if shutil.which("xmlsec1") is None:
        pytest.fail("xmlsec1 is not on PATH: `apt-get install -y xmlsec1` (pysaml2 signs and verifies with it)")
    workdir = tmp_path_factory.mktemp("saml-idp")
    key_file, cert_file = make_key_pair(workdir, "idp")
    port = free_port()
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "PORT": str(port),
        "ADMIN_TOKEN": token,
        "KEY_FILE": str(key_file),
        "CERT_FILE": str(cert_file),
    }
    log_path = workdir / "saml-idp.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our script
            [sys.executable, str(IDP_SCRIPT)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    idp = SamlIdp(f"http://127.0.0.1:{port}", token, key_file, cert_file, log_path, process)
    died: int | None = None
    try:
        _wait_ready(idp)
        yield idp
    finally:
        died = stop_process(process)
    if died is not None:
        pytest.fail(f"the SAML IdP died during the tests (exit {died})\n--- log ---\n{log_path.read_text()}")
