"""The `entente` console script, run as an operator runs it (a subprocess with ENTENTE_DATABASE_URL),
on a fresh SQLite file and on a fresh PostgreSQL database: migrate, partners, tokens, and errors that
are one clear line on stderr with exit code 1, never a traceback. Tests of many error cases run the
same typer app in-process (``cli_in_process``), to spare an interpreter start-up per call.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broker.main import create_app
from broker.settings import Settings
from tests.cli_runner import TOKEN_RE, Cli
from tests.conftest import SCIM_BASE, USER_SCHEMA


@pytest.fixture(scope="module")
def api(cli: Cli) -> Iterator[TestClient]:
    """The SCIM API in-process on the CLI's database, with no credentials of its own."""
    app = create_app(Settings(database_url=cli.url, public_base_url="http://testserver"))
    with TestClient(app, base_url=SCIM_BASE, raise_server_exceptions=False) as client:
        yield client
    app.state.engine.dispose()


def _slug() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_migrate_is_idempotent(cli: Cli) -> None:
    assert cli.ok("migrate").stdout == "schema is up to date\n"


def test_partner_add_and_list(cli: Cli) -> None:
    slug = _slug()
    added = cli.ok(
        "partner",
        "add",
        slug,
        "--name",
        "Acme Corp",
        "--domain",
        f"{slug}.test",
        "--domain",
        f"Mail.{slug}.TEST.",
    )
    assert added.stdout == f"partner {slug} added ({slug}.test, mail.{slug}.test)\n"
    rows = [line.split("\t") for line in cli.ok("partner", "list").lines]
    assert [slug, "active", "enforce", "Acme Corp", f"{slug}.test, mail.{slug}.test"] in rows
    assert [r[0] for r in rows] == sorted(r[0] for r in rows), "listed by slug"


def test_internationalised_domain_is_stored_in_punycode(cli: Cli) -> None:
    slug = _slug()
    added = cli.ok("partner", "add", slug, "--name", "Bücher", "--domain", f"bücher.{slug}.test")
    assert added.stdout == f"partner {slug} added (xn--bcher-kva.{slug}.test)\n"


def test_token_works_against_the_api_and_is_alone_on_the_last_line(cli: Cli, api: TestClient) -> None:
    slug = _slug()
    cli.ok("partner", "add", slug, "--name", "Token Co", "--domain", f"{slug}.test")
    issued = cli.ok("partner", "token", slug, "--expires", "30d", "--label", "Okta prod")
    token = issued.lines[-1]
    match = TOKEN_RE.match(token)
    assert match is not None, issued
    secret = match.group(2)
    assert secret not in "\n".join(issued.lines[:-1]), "the secret is printed once, alone"
    header = issued.lines[0]
    assert header.startswith(f"token id {match.group(1)}, expires ")
    expires = dt.datetime.fromisoformat(header.split("expires ", 1)[1].split(";", 1)[0])
    assert abs(expires - (dt.datetime.now(dt.UTC) + dt.timedelta(days=30))) < dt.timedelta(minutes=5)

    created = api.post(
        "/Users", headers=_bearer(token), json={"schemas": [USER_SCHEMA], "userName": f"ann@{slug}.test"}
    )
    assert created.status_code == 201, created.text
    listed = api.get("/Users", headers=_bearer(token)).json()
    assert [u["userName"] for u in listed["Resources"]] == [f"ann@{slug}.test"]

    tokens = cli.ok("partner", "tokens", slug)
    assert secret not in tokens.stdout
    [row] = [line.split("\t") for line in tokens.lines]
    assert row[0] == match.group(1) and row[1] == "active" and row[4] == "Okta prod"
    assert row[3].startswith("last used ") and row[3] != "last used never"


def test_token_lifetimes(cli_in_process: Cli) -> None:
    """--expires in days, hours, minutes or a bare number of days; the default is a year."""
    slug = _slug()
    cli_in_process.ok("partner", "add", slug, "--name", "Life", "--domain", f"{slug}.test")
    for expires, delta in (
        ("12h", dt.timedelta(hours=12)),
        ("30m", dt.timedelta(minutes=30)),
        (" 7 ", dt.timedelta(days=7)),
        (None, dt.timedelta(days=365)),
    ):
        issued = cli_in_process.ok("partner", "token", slug, *(["--expires", expires] if expires else []))
        assert TOKEN_RE.match(issued.lines[-1])
        expires_at = dt.datetime.fromisoformat(issued.lines[0].split("expires ", 1)[1].split(";", 1)[0])
        assert abs(expires_at - (dt.datetime.now(dt.UTC) + delta)) < dt.timedelta(minutes=5), expires


def test_revoke_token(cli: Cli, api: TestClient) -> None:
    slug = _slug()
    cli.ok("partner", "add", slug, "--name", "Revoke Co", "--domain", f"{slug}.test")
    first = cli.ok("partner", "token", slug).lines[-1]
    second = cli.ok("partner", "token", slug).lines[-1]
    first_id = TOKEN_RE.match(first).group(1)  # type: ignore[union-attr]
    assert api.get("/Users", headers=_bearer(first)).status_code == 200
    assert cli.ok("partner", "revoke-token", slug, first_id).stdout == f"token {first_id} revoked\n"
    refused = api.get("/Users", headers=_bearer(first))
    assert refused.status_code == 401 and refused.json()["detail"] == "bearer token has been revoked"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert api.get("/Users", headers=_bearer(second)).status_code == 200, "only that token is revoked"
    states = {line.split("\t")[0]: line.split("\t")[1] for line in cli.ok("partner", "tokens", slug).lines}
    assert states == {first_id: "revoked", TOKEN_RE.match(second).group(1): "active"}  # type: ignore[union-attr]
    assert cli.ok("partner", "revoke-token", slug, first_id).stdout == f"token {first_id} revoked\n", "idempotent"


def test_a_token_cannot_be_revoked_through_another_partner(cli: Cli, api: TestClient) -> None:
    owner, other = _slug(), _slug()
    for slug in (owner, other):
        cli.ok("partner", "add", slug, "--name", slug, "--domain", f"{slug}.test")
    token = cli.ok("partner", "token", owner).lines[-1]
    token_id = TOKEN_RE.match(token).group(1)  # type: ignore[union-attr]
    cli.fails("partner", "revoke-token", other, token_id, message=f"partner '{other}' has no token '{token_id}'")
    assert api.get("/Users", headers=_bearer(token)).status_code == 200
    assert cli.ok("partner", "tokens", other).stdout == ""


def test_errors_are_one_line_and_exit_1(cli_in_process: Cli) -> None:
    slug, other = _slug(), _slug()
    cli_in_process.ok("partner", "add", slug, "--name", "First", "--domain", f"{slug}.test")
    cli_in_process.fails(
        "partner",
        "add",
        slug,
        "--name",
        "Again",
        "--domain",
        f"x{slug}.test",
        message=f"partner '{slug}' already exists",
    )
    cli_in_process.fails(
        "partner",
        "add",
        other,
        "--name",
        "Bad",
        "--domain",
        "not a domain",
        message="'not a domain' is not a valid domain name",
    )
    cli_in_process.fails(
        "partner",
        "add",
        other,
        "--name",
        "Bad",
        "--domain",
        "localhost",
        message="'localhost' is not a valid domain name",
    )
    cli_in_process.fails(
        "partner",
        "add",
        other,
        "--name",
        "Bad",
        "--domain",
        "-bad-.test",
        message="'-bad-.test' is not a valid domain name",
    )
    cli_in_process.fails(
        "partner",
        "add",
        other,
        "--name",
        "Thief",
        "--domain",
        f"{other}.test",
        "--domain",
        f"{slug.upper()}.test",
        message=f"domain(s) already verified by another partner: {slug}.test",
    )
    cli_in_process.fails(
        "partner",
        "add",
        "Bad_Slug",
        "--name",
        "Bad",
        "--domain",
        f"{other}.test",
        message="slug 'Bad_Slug' must be 1-64 lower-case letters, digits or inner hyphens",
    )
    missing = _slug()
    for args in (
        ("token", missing),
        ("tokens", missing),
        ("revoke-token", missing, "0123456789abcdef"),
        ("domain-policy", missing, "warn"),
    ):
        cli_in_process.fails("partner", *args, message=f"no partner '{missing}'")
    cli_in_process.fails(
        "partner",
        "revoke-token",
        slug,
        "0123456789abcdef",
        message=f"partner '{slug}' has no token '0123456789abcdef'",
    )
    cli_in_process.fails("partner", "token", slug, "--expires", "0d", message="a token must expire in the future")
    cli_in_process.fails(
        "partner", "token", slug, "--expires", "3000000d", message="a token must expire before the year 10000"
    )
    # nothing of the refused adds was written
    listed = [line.split("\t")[0] for line in cli_in_process.ok("partner", "list").lines]
    assert slug in listed and other not in listed and "Bad_Slug" not in listed


def test_unparseable_duration_is_a_usage_error(cli_in_process: Cli) -> None:
    """A malformed --expires is a usage error (typer's exit 2), explained, without a traceback."""
    slug = _slug()
    cli_in_process.ok("partner", "add", slug, "--name", "Dur", "--domain", f"{slug}.test")
    for expires in ("abc", "1e3", "99999999999d", "d"):
        result = cli_in_process("partner", "token", slug, "--expires", expires)
        assert result.code == 2, result
        assert "is not a duration like 90d, 12h or 30m" in result.stderr
    assert cli_in_process.ok("partner", "tokens", slug).stdout == "", "no token was issued"


def test_missing_required_options_are_usage_errors(cli_in_process: Cli) -> None:
    for args in (
        ("partner", "add", _slug(), "--name", "No domain"),
        ("partner", "add", _slug()),
        ("partner", "revoke-token", "acme"),
    ):
        result = cli_in_process(*args)
        assert result.code == 2 and "Missing" in result.stderr, result


def test_unreachable_or_unmigrated_database(tmp_path: Path) -> None:
    """No schema, or no server: one line naming the database (password hidden) and what to check."""
    fresh = Cli(f"sqlite:///{tmp_path / 'empty.db'}")
    result = fresh("partner", "list")
    assert result.code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: database sqlite:///{tmp_path / 'empty.db'}: ")
    assert "entente migrate" in result.stderr and len(result.stderr.splitlines()) == 1
    down = Cli("postgresql+psycopg://postgres:s3cret@127.0.0.1:9/nowhere")
    for args in (("migrate",), ("partner", "list"), ("partner", "token", "acme")):
        result = down(*args)
        assert result.code == 1 and len(result.stderr.splitlines()) == 1, result
        assert result.stderr.startswith("error: database postgresql+psycopg://postgres:***@127.0.0.1:9/nowhere: ")
        assert "s3cret" not in result.stderr
