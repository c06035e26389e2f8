"""Helpers for the verifiable audit log's tests: checkpoints made on demand, exports, the log key, the CLI.

The database is shared by the whole session, so nothing assumes an empty log: tests read the size
a checkpoint reports and work relative to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from broker.audit.checkpoints import AuditCheckpoint, latest_checkpoint, load_log_key, make_checkpoint
from broker.audit.export import export_lines
from broker.audit.log import Actor, AuditRecord, append_audit
from broker.audit.note import VerifierKey
from broker.settings import Settings
from tests.cli_runner import Run

OPERATOR_TOKEN = "ent_audit_operator-token-for-tests-only-0123456789abcdef"
Checkpointer = Callable[[], AuditCheckpoint]
Exporter = Callable[..., list[str]]
AuditRows = Callable[[str], list[AuditRecord]]
"""The ``audit`` fixture of tests/conftest.py: a partner's records in id order."""


@pytest.fixture
def checkpoint(engine: Engine, settings: Settings) -> Checkpointer:
    """checkpoint() -> sequence everything pending and sign now (if the log grew); the latest checkpoint."""

    def make() -> AuditCheckpoint:
        with Session(engine, expire_on_commit=False) as session:
            if session.exec(select(AuditRecord.id).limit(1)).first() is None:
                # A test run first on a fresh database meets an empty log, which has nothing to sign.
                append_audit(session, actor=Actor("system", "tests"), action="test.first_record", partner_id=None)
                session.commit()
            make_checkpoint(session, settings, force=True, wait=True)
            latest = latest_checkpoint(session)
        assert latest is not None
        return latest

    return make


@pytest.fixture
def export(engine: Engine) -> Exporter:
    """export(tree_size=None, since=0, partner=(id, slug)|None, prove_from=()) -> the export's lines."""

    def run(**options: object) -> list[str]:
        return list(export_lines(engine, **options))  # type: ignore[arg-type]

    return run


@pytest.fixture
def log_key(settings: Settings) -> VerifierKey:
    return load_log_key(settings).verifier_key


@pytest.fixture
def operator_app(app: FastAPI, settings: Settings) -> Iterator[FastAPI]:
    """The session's app, with an audit operator token configured for this test (starlette's State is
    not something pytest's monkeypatch can restore)."""
    digest = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
    app.state.settings = settings.model_copy(update={"audit_operator_token_sha256": digest})
    try:
        yield app
    finally:
        app.state.settings = settings


@pytest.fixture
def audit_api(operator_app: FastAPI) -> Iterator[TestClient]:
    """An audit API client without credentials of its own (no lifespan: no scheduler runs)."""
    client = TestClient(operator_app, base_url="http://testserver/audit/v1", raise_server_exceptions=False)
    yield client
    client.close()


def verify_cli(*args: str | Path) -> Run:
    """`entente audit verify ARGS` in this process: it reads files only, never the database."""
    from broker.cli import app

    done = CliRunner().invoke(app, ["audit", "verify", *map(str, args)], env={"COLUMNS": "200"})
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return Run(done.exit_code, done.stdout, done.stderr)


@pytest.fixture
def scratch(database_url: str, settings: Settings, tmp_path: Path) -> Iterator[tuple[Engine, Settings]]:
    """A fresh database of the session's backend, made by Alembic, that a test may damage on purpose."""
    from broker.db import create_db_engine, migrate
    from tests.conftest import PG_URL_BASE, _create_pg_database, _drop_pg_database

    name = None
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'scratch.db'}"
    else:
        name = _create_pg_database()
        url = f"{PG_URL_BASE}/{name}"
    scratch_settings = settings.model_copy(update={"database_url": url})
    migrate(scratch_settings)
    engine = create_db_engine(scratch_settings)
    try:
        yield engine, scratch_settings
    finally:
        engine.dispose()
        if name:
            _drop_pg_database(name)
