"""Structured JSON logs with request ids, in process and from a real `entente serve --workers 2` (issue 6)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from broker.audit.log import Actor
from broker.db import create_db_engine
from broker.observability.http import _request_id
from broker.observability.logging import JsonFormatter, RequestContextFilter, log_config
from broker.settings import Settings
from broker.tenants.models import DomainPolicy
from broker.tenants.service import add_partner, issue_scim_token
from tests.conftest import TEST_AUDIT_SIGNING_KEY, TEST_SECRET_KEY, USER_SCHEMA, PartnerHandle
from tests.peers.entente_process import ENTENTE, free_port, stop_process


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes while the test runs, through the JSON formatter `entente serve` uses."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _records(stream: io.StringIO, logger: str) -> list[dict[str, Any]]:
    return [entry for entry in map(json.loads, stream.getvalue().splitlines()) if entry["logger"] == logger]


def test_access_line_carries_request_id_and_partner(json_lines: io.StringIO, partner: PartnerHandle) -> None:
    response = partner.client.post("/Users", json=partner.user("ada"), headers={"X-Request-ID": "trace-42.a"})
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == "trace-42.a"

    [line] = _records(json_lines, "entente.access")
    assert line["request_id"] == "trace-42.a"
    assert line["partner"] == partner.slug
    assert (line["method"], line["path"], line["status"]) == ("POST", "/scim/v2/Users", 201)
    assert line["level"] == "INFO" and line["msg"] == "POST /scim/v2/Users 201"
    assert line["ts"].endswith("+00:00") and isinstance(line["duration_ms"], float)


def test_request_id_is_made_when_absent_or_unusable(json_lines: io.StringIO, partner: PartnerHandle) -> None:
    made = partner.client.get("/Users", params={"filter": 'userName eq "nobody@example.com"'})
    bad = partner.client.get("/Users", headers={"X-Request-ID": "has spaces and\ttabs"})
    ids = [made.headers["X-Request-ID"], bad.headers["X-Request-ID"]]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and ids[0] != ids[1]
    assert [line["request_id"] for line in _records(json_lines, "entente.access")] == ids
    assert all("filter" not in line["path"] for line in _records(json_lines, "entente.access"))


def test_a_forked_worker_makes_other_request_ids_than_its_parent() -> None:
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of a fork beside threads; the child only writes
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits at once
        os.write(write, _request_id({}).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    os.close(read)
    assert len(from_child) == 32 and from_child != _request_id({})


def test_log_lines_outside_requests_and_exceptions_stay_one_json_line(json_lines: io.StringIO) -> None:
    log = logging.getLogger("entente.test")
    log.info("worker woke", extra={"workspace": "demo-wiki"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("delivery failed")
    first, second = _records(json_lines, "entente.test")
    assert first["workspace"] == "demo-wiki" and "request_id" not in first
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]
    assert json_lines.getvalue().count("\n") == 2


def test_text_format_is_selectable(settings: Settings) -> None:
    config = log_config(settings.model_copy(update={"log_format": "text", "log_level": "WARNING"}))
    assert "request_id" in config["formatters"]["default"]["format"]
    assert config["root"]["level"] == "WARNING"
    assert config["formatters"]["default"] != log_config(settings)["formatters"]["default"]


def test_outgoing_requests_log_only_at_debug(settings: Settings) -> None:
    """httpx's INFO line per outgoing request (IdP token calls, deliveries) is noise at INFO, wanted at DEBUG."""
    at_info = log_config(settings.model_copy(update={"log_level": "INFO"}))
    at_debug = log_config(settings.model_copy(update={"log_level": "DEBUG"}))
    assert at_info["loggers"]["httpx"]["level"] == "WARNING" and at_info["loggers"]["httpx"]["propagate"] is True
    assert at_debug["loggers"]["httpx"]["level"] == "DEBUG"


def _wait_ready(root_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"entente serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{root_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"entente serve was not ready within 60 s:\n{log_path.read_text()}")


def _partner_token(settings: Settings, slug: str) -> str:
    """A partner and its SCIM token, made in this process on the server's database."""
    engine = create_db_engine(settings)
    try:
        with Session(engine) as session:
            add_partner(
                session=session,
                slug=slug,
                name=slug,
                domains=[f"{slug}.test"],
                actor=Actor("cli", "tests"),
                domain_policy=DomainPolicy.ENFORCE,
            )
            issued = issue_scim_token(
                session=session, slug=slug, expires_in=dt.timedelta(hours=1), actor=Actor("cli", "tests")
            )
        return issued.secret_text
    finally:
        engine.dispose()


def test_serve_with_two_workers_logs_json_and_sums_metrics(tmp_path: Path) -> None:
    """Every line `entente serve --workers 2` writes is JSON; both processes' SCIM counts reach one /metrics.

    Runs once, on a fresh SQLite file the server migrates itself: three Python processes start here.
    """
    port = free_port()
    root_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'entente.db'}",
        secret_key=TEST_SECRET_KEY,
        audit_signing_key=TEST_AUDIT_SIGNING_KEY,
    )
    env = {
        "PATH": str(ENTENTE.parent) + ":/usr/bin:/bin",
        "ENTENTE_DATABASE_URL": settings.database_url,
        "ENTENTE_PUBLIC_BASE_URL": root_url,
        "ENTENTE_SECRET_KEY": TEST_SECRET_KEY,
        "ENTENTE_AUDIT_SIGNING_KEY": TEST_AUDIT_SIGNING_KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [str(ENTENTE), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    slug = f"ops{uuid.uuid4().hex[:8]}"
    try:
        _wait_ready(root_url, process, log_path)
        headers = {"Authorization": f"Bearer {_partner_token(settings, slug)}", "X-Request-ID": "serve-trace-1"}
        for n in range(6):  # a new connection each: the two processes share the accepting socket
            body = {"schemas": [USER_SCHEMA], "userName": f"u{n}@{slug}.test"}
            assert httpx.post(f"{root_url}/scim/v2/Users", json=body, headers=headers).status_code == 201
        metrics = httpx.get(f"{root_url}/metrics").text
    finally:
        assert stop_process(process) is None, log_path.read_text()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    created = (("method", "POST"), ("partner", slug), ("status", "201"))
    assert samples[("entente_scim_requests_total", created)] == 6
    assert samples[("entente_database_up", ())] == 1
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    access = [line for line in lines if line["logger"] == "entente.access"]
    assert len(access) == 6 and {line["request_id"] for line in access} == {"serve-trace-1"}
    assert {line["partner"] for line in access} == {slug}
    assert list((tmp_path / "metrics").glob("counter_*.db"))
