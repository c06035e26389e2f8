"""GET /healthz (liveness) and GET /readyz (database reachable and migrated to head) (issue 6)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from broker.main import create_app
from broker.settings import Settings
from tests.conftest import PG_URL_BASE, _create_pg_database, _drop_pg_database


def _get(app: FastAPI, path: str) -> tuple[int, dict[str, str]]:
    response = TestClient(app).get(path)  # not entered: no lifespan, no worker
    return response.status_code, response.json()


def test_migrated_database_is_ready(app: FastAPI) -> None:
    assert _get(app, "/healthz") == (200, {"status": "ok"})
    assert _get(app, "/readyz") == (200, {"status": "ready"})


def test_unmigrated_database_is_not_ready(settings: Settings, tmp_path: Path) -> None:
    """A fresh, empty database: alive, but 503 until `entente migrate` ran."""
    pg_name = None if settings.database_url.startswith("sqlite") else _create_pg_database()
    url = f"sqlite:///{tmp_path / 'empty.db'}" if pg_name is None else f"{PG_URL_BASE}/{pg_name}"
    app = create_app(settings.model_copy(update={"database_url": url}))
    try:
        status, body = _get(app, "/readyz")
    finally:
        app.state.engine.dispose()
        if pg_name is not None:
            _drop_pg_database(pg_name)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("database schema at revision none, expected ")
    assert body["reason"].endswith("run `entente migrate`")
    assert _get(app, "/healthz")[0] == 200


def test_unreachable_database_is_not_ready(settings: Settings, tmp_path: Path) -> None:
    if settings.database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    else:
        url = "postgresql+psycopg://postgres@127.0.0.1:1/entente"  # nothing listens on port 1
    app = create_app(settings.model_copy(update={"database_url": url}))
    status, body = _get(app, "/readyz")
    assert (status, body["status"]) == (503, "unavailable")
    assert body["reason"] == "database unreachable: OperationalError"
    assert _get(app, "/healthz") == (200, {"status": "ok"})
