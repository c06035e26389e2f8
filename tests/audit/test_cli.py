"""`entente audit …` and `entente partner audit-key` as an operator and a partner run them.

The typer app runs in this process (an interpreter start-up per command would dominate the test on
a busy machine); one test runs the installed console script itself.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from typer.testing import CliRunner

from broker.audit.note import Checkpoint, NoteSignature, VerifierKey, open_note, split_note, verify_cosignature
from tests.cli_runner import ENTENTE, Cli, Run


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-cli")


def _env(cli: Cli, keydir: Path) -> dict[str, str]:
    return {
        "ENTENTE_DATABASE_URL": cli.url,
        "ENTENTE_AUDIT_SIGNING_KEY_FILE": str(keydir / "audit.key"),
        "ENTENTE_PUBLIC_BASE_URL": "https://entente.example",
        "COLUMNS": "200",
    }


def entente(cli: Cli, keydir: Path, *args: str | Path) -> Run:
    """`entente ARGS` on the fixture's database, with the log's key file in a temporary folder."""
    from broker.cli import app

    done = CliRunner().invoke(app, [str(a) for a in args], env=_env(cli, keydir))
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return Run(done.exit_code, done.stdout, done.stderr)


def ok(cli: Cli, keydir: Path, *args: str | Path) -> Run:
    result = entente(cli, keydir, *args)
    assert result.code == 0 and result.stderr == "", result
    return result


def test_checkpoint_export_verify_round_trip(cli_in_process: Cli, keydir: Path) -> None:
    cli = cli_in_process
    first = entente(cli, keydir, "audit", "checkpoint")
    if first.code == 1:  # a fresh database: nothing to sign yet
        assert first.stderr == "error: the audit log is empty: nothing to sign\n"
    slug = f"a{uuid.uuid4().hex[:10]}"
    ok(cli, keydir, "partner", "add", slug, "--name", "Audit CLI", "--domain", f"{slug}.test")
    held = ok(cli, keydir, "audit", "checkpoint").stdout
    vkey = ok(cli, keydir, "audit", "public-key").stdout.strip()
    assert vkey.startswith("entente.example/audit+")
    parsed = Checkpoint.parse(open_note(held, VerifierKey.parse(vkey)))
    assert parsed.origin == "entente.example/audit" and parsed.tree_size >= 1
    (keydir / "held.note").write_text(held)
    (keydir / "log.vkey").write_text(vkey + "\n")

    ok(cli, keydir, "partner", "token", slug)  # one more record
    latest = ok(cli, keydir, "audit", "checkpoint").stdout
    (keydir / "latest.note").write_text(latest)
    (keydir / "full.jsonl").write_text(ok(cli, keydir, "audit", "export").stdout)
    verified = ok(
        cli,
        keydir,
        "audit",
        "verify",
        keydir / "full.jsonl",
        "--checkpoint",
        keydir / "latest.note",
        "--public-key",
        keydir / "log.vkey",
        "--earlier",
        keydir / "held.note",
    )
    size = Checkpoint.parse(split_note(latest)[0]).tree_size
    assert verified.stdout.splitlines() == [
        f"ok: {size} leaves of the whole log verified against entente.example/audit at tree size {size}",
        f"ok: consistent with earlier checkpoints at {parsed.tree_size}",
    ]
    slice_ = ok(
        cli_in_process, keydir, "audit", "export", "--partner", slug, "--prove-from", str(parsed.tree_size)
    ).stdout
    (keydir / "slice.jsonl").write_text(slice_)
    verified = ok(
        cli,
        keydir,
        "audit",
        "verify",
        keydir / "slice.jsonl",
        "--checkpoint",
        keydir / "latest.note",
        "--public-key",
        keydir / "log.vkey",
        "--earlier",
        keydir / "held.note",
    )
    assert f"of partner {slug}'s slice" in verified.stdout
    assert ok(cli, keydir, "audit", "checkpoint").stdout == latest  # nothing new: the same checkpoint


def test_partner_registers_a_key_and_cosigns_offline(cli_in_process: Cli, keydir: Path) -> None:
    cli = cli_in_process
    slug = f"k{uuid.uuid4().hex[:10]}"
    ok(cli, keydir, "partner", "add", slug, "--name", "Cosigner", "--domain", f"{slug}.test")
    key = Ed25519PrivateKey.generate()
    (keydir / "partner.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (keydir / "partner.pub").write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    name = f"{slug}.example/witness"
    registered = ok(
        cli, keydir, "partner", "audit-key", slug, keydir / "partner.pub", "--name", name
    ).stdout.splitlines()
    vkey = VerifierKey.parse(registered[-1])
    assert registered[0] == f"partner {slug}: cosigning key {name} ({vkey.key_id.hex()}) registered"
    again = ok(cli, keydir, "partner", "audit-key", slug, keydir / "partner.pub", "--name", name)
    assert again.stdout.splitlines()[-1] == registered[-1]  # idempotent

    note = ok(cli, keydir, "audit", "checkpoint").stdout
    (keydir / "cosign.note").write_text(note)
    line = ok(
        cli_in_process,
        keydir,
        "audit",
        "cosign",
        keydir / "cosign.note",
        "--key",
        keydir / "partner.pem",
        "--name",
        name,
    )
    signature = NoteSignature.parse(line.stdout)
    assert verify_cosignature(split_note(note)[0], signature, vkey) > 0


def test_operator_token_prints_its_hash(cli_in_process: Cli, keydir: Path) -> None:
    cli = cli_in_process
    first, token = ok(cli, keydir, "audit", "operator-token").stdout.splitlines()
    assert first == f"ENTENTE_AUDIT_OPERATOR_TOKEN_SHA256={hashlib.sha256(token.encode()).hexdigest()}"
    assert token.startswith("ent_audit_")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("audit", "export", "--partner", "nobody-here"), "no partner 'nobody-here'"),
        (("audit", "export", "--tree-size", "999999999"), "no checkpoint was signed at tree size 999999999"),
        (("partner", "audit-key", "nobody-here", "/nonexistent.pub"), "cannot read public key /nonexistent.pub: "),
        (("audit", "verify", "/nonexistent.jsonl", "--checkpoint", "/nonexistent.note"), "cannot read "),
    ],
)
def test_errors_are_one_line(cli_in_process: Cli, keydir: Path, args: tuple[str, ...], message: str) -> None:
    cli = cli_in_process
    result = entente(cli, keydir, *args)
    assert result.code == 1 and result.stdout == "", result
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1, result


def test_the_console_script_verifies_an_export(cli_in_process: Cli, keydir: Path) -> None:
    """The installed `entente` itself, as a partner's auditor runs it on a machine without the database."""
    slug = f"s{uuid.uuid4().hex[:10]}"
    in_process = cli_in_process
    ok(in_process, keydir, "partner", "add", slug, "--name", "Script", "--domain", f"{slug}.test")
    (keydir / "script.note").write_text(ok(in_process, keydir, "audit", "checkpoint").stdout)
    (keydir / "script.vkey").write_text(ok(in_process, keydir, "audit", "public-key").stdout)
    (keydir / "script.jsonl").write_text(ok(in_process, keydir, "audit", "export", "--partner", slug).stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTENTE_")}
    args = ["audit", "verify", "script.jsonl", "--checkpoint", "script.note", "--public-key", "script.vkey"]
    done = subprocess.run(
        [ENTENTE, *args], env=env, cwd=keydir, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.startswith(f"ok: 1 leaves of partner {slug}'s slice verified"), done.stdout
