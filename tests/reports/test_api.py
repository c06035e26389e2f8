"""GET /api/reports/stale: operator and partner credentials, partner isolation, CSV and JSON Lines streams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from broker.reports.runner import stale_access
from broker.types import utcnow
from tests.reports.conftest import OPERATOR_TOKEN, Scenario
from tests.reports.formats import as_csv, as_jsonl, parse_csv, parse_jsonl

PATH = "/api/reports/stale"


@pytest.fixture
def api(operator_app: FastAPI) -> Iterator[TestClient]:
    client = TestClient(operator_app, base_url="http://testserver", raise_server_exceptions=False)
    yield client
    client.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_operator_reads_any_partner_as_csv(api: TestClient, engine: Engine, scenario: Scenario) -> None:
    s = scenario
    response = api.get(PATH, params={"partner": s.a.slug, "format": "csv"}, headers=_bearer(OPERATOR_TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    expected = as_csv(list(stale_access(engine, scope=s.scope(s.a), options=s.options(utcnow()))))
    assert parse_csv(response.text) == expected and len(expected) == 9


def test_operator_reads_every_partner(api: TestClient, engine: Engine, scenario: Scenario) -> None:
    s = scenario
    response = api.get(PATH, headers=_bearer(OPERATOR_TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jsonl"
    mine = {s.a.slug, s.b.slug, s.c.slug}
    rows = [row for row in parse_jsonl(response.text) if row["partner"] in mine]
    now = utcnow()
    expected = [
        row
        for h in sorted((s.a, s.b, s.c), key=lambda h: h.slug)
        for row in as_jsonl(list(stale_access(engine, scope=s.scope(h), options=s.options(now))))
    ]
    assert rows == expected


def test_a_partner_reads_only_its_own_report(api: TestClient, engine: Engine, scenario: Scenario) -> None:
    s = scenario
    own = api.get(PATH, headers=_bearer(s.b.token))
    assert own.status_code == 200, own.text
    expected = as_jsonl(list(stale_access(engine, scope=s.scope(s.b), options=s.options(utcnow()))))
    assert parse_jsonl(own.text) == expected and {row["partner"] for row in expected} == {s.b.slug}
    named = api.get(PATH, params={"partner": s.b.slug}, headers=_bearer(s.b.token))
    assert parse_jsonl(named.text) == expected

    other = api.get(PATH, params={"partner": s.a.slug}, headers=_bearer(s.b.token))
    missing = api.get(PATH, params={"partner": "no-such-partner"}, headers=_bearer(s.b.token))
    assert (other.status_code, missing.status_code) == (404, 404)
    assert other.json() == {"error": "NotFound", "detail": f"no partner '{s.a.slug}'"}

    no_workspace = api.get(PATH, params={"workspace": "no-such-ws"}, headers=_bearer(s.b.token))
    assert (no_workspace.status_code, no_workspace.text) == (200, "")
    assert api.get(PATH, params={"workspace": "no-such-ws"}, headers=_bearer(OPERATOR_TOKEN)).status_code == 404


def test_refusals(api: TestClient, scenario: Scenario) -> None:
    assert api.get(PATH).status_code == 401
    assert api.get(PATH, headers=_bearer("not-the-operator-token")).status_code == 401
    bad = api.get(PATH, params={"inactive_days": -1}, headers=_bearer(OPERATOR_TOKEN))
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidValue"
    assert api.get(PATH, params={"format": "xml"}, headers=_bearer(OPERATOR_TOKEN)).status_code == 400
