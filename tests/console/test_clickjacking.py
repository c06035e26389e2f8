"""RFC 9700 §4.16 for the operator console: its sign-in form and its pages (the kill switch among them)
are never framed by another site, and send no ``Referer`` to one."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.console.conftest import browser_for


def _cannot_be_framed(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["x-frame-options"] == "DENY", headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"], headers
    assert headers["referrer-policy"] == "same-origin" and headers["cache-control"] == "no-store"


def test_4_16_the_console_sign_in_form_cannot_be_framed(console_app: FastAPI) -> None:
    client = browser_for(console_app)
    try:
        page = client.get("/console/login")
        assert page.status_code == 200 and 'name="password"' in page.text
        _cannot_be_framed(page)
        gate = client.get("/console/kill")  # not signed in: sent to the sign-in form
        assert gate.status_code == 303 and gate.headers["location"].startswith("/console/login")
        _cannot_be_framed(gate)
    finally:
        client.close()


@pytest.mark.parametrize("path", ["/console/kill", "/console/partners", "/console/audit"])
def test_4_16_console_pages_cannot_be_framed(operator: TestClient, path: str) -> None:
    page = operator.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    _cannot_be_framed(page)
