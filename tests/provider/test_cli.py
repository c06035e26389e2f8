"""`entente client add | list | rotate-key` (the typer app in process, on a fresh database per backend)."""

from __future__ import annotations

import hashlib
import uuid

from sqlmodel import Session, create_engine

from broker.provider.models import OAuthClient
from tests.cli_runner import Cli


def _slug(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _workspace(cli: Cli) -> str:
    slug = _slug("ws-")
    cli.ok(
        "workspace", "add", slug, "--connector", "scim", "--set", "base_url=http://127.0.0.1:9/v2", "--set", "token=t"
    )
    return slug


def test_client_add_prints_the_secret_once_and_stores_its_digest(cli_in_process: Cli) -> None:
    workspace, client_id = _workspace(cli_in_process), _slug("synapse-")
    out = cli_in_process.ok(
        "client", "add", client_id, "--workspace", workspace,
        "--redirect-uri", "http://127.0.0.1:8008/_synapse/client/oidc/callback",
        "--redirect-uri", "https://chat.example/_synapse/client/oidc/callback",
        "--backchannel-logout-uri", "http://127.0.0.1:8008/_synapse/client/oidc/backchannel_logout",
    )  # fmt: skip
    assert f"client_id: {client_id}" in out.lines
    secret = out.lines[-1]
    assert secret.startswith("ent_oidc_") and len(secret) > 40
    with Session(create_engine(cli_in_process.url)) as session:
        row = session.get(OAuthClient, client_id)
        assert row is not None and row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        assert row.redirect_uris == [
            "http://127.0.0.1:8008/_synapse/client/oidc/callback",
            "https://chat.example/_synapse/client/oidc/callback",
        ]
        assert row.scopes == ["openid", "profile", "email"]
    listed = cli_in_process.ok("client", "list").stdout
    assert f"{client_id}\t{workspace}\tconfidential\t" in listed and secret not in listed


def test_public_client_has_no_secret(cli_in_process: Cli) -> None:
    workspace, client_id = _workspace(cli_in_process), _slug("spa-")
    out = cli_in_process.ok(
        "client", "add", client_id, "--workspace", workspace, "--redirect-uri", "http://localhost:5173/cb", "--public"
    )
    assert "PKCE S256 is required" in out.stdout and "ent_oidc_" not in out.stdout
    assert f"{client_id}\t{workspace}\tpublic\t" in cli_in_process.ok("client", "list").stdout


def test_client_add_refuses_bad_input_in_one_line(cli_in_process: Cli) -> None:
    workspace = _workspace(cli_in_process)
    cli_in_process.fails(
        "client", "add", _slug("c-"), "--workspace", workspace, "--redirect-uri", "http://chat.example/cb",
        message="redirect URI 'http://chat.example/cb' must use https (http only on a loopback address)",
    )  # fmt: skip
    cli_in_process.fails(
        "client", "add", _slug("c-"), "--workspace", workspace, "--redirect-uri", "https://chat.example/cb#x",
        message="redirect URI 'https://chat.example/cb#x' must not have a fragment",
    )  # fmt: skip
    cli_in_process.fails(
        "client", "add", _slug("c-"), "--workspace", "nope", "--redirect-uri", "https://chat.example/cb",
        message="no workspace 'nope'",
    )  # fmt: skip
    cli_in_process.fails(
        "client", "add", "Bad_Slug", "--workspace", workspace, "--redirect-uri", "https://chat.example/cb",
        message="client id 'Bad_Slug' must be lower-case letters, digits and dashes",
    )  # fmt: skip
    taken = _slug("c-")
    cli_in_process.ok("client", "add", taken, "--workspace", workspace, "--redirect-uri", "https://a.example/cb")
    cli_in_process.fails(
        "client", "add", taken, "--workspace", workspace, "--redirect-uri", "https://a.example/cb",
        message=f"client '{taken}' already exists",
    )  # fmt: skip
    assert cli_in_process("client", "add", _slug("c-"), "--workspace", workspace).code == 2  # --redirect-uri required


def test_rotate_key(cli_in_process: Cli) -> None:
    out = cli_in_process.ok("client", "rotate-key", "--now")
    assert out.stdout.startswith("signing key ") and "it signs from" in out.stdout
