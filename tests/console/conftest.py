"""Console fixtures: an app answering as ``http://localhost`` (so the OIDC provider accepts its redirect URI)
with a bootstrap operator password, signed-in browsers, and partners with people, grants and deliveries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from http.cookiejar import Cookie

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from broker.main import create_app
from broker.settings import Settings

BASE = "http://localhost"
PASSWORD = "correct horse battery staple"  # noqa: S105 (a test password)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="session")
def console_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"public_base_url": BASE, "bootstrap_admin_password": SecretStr(PASSWORD), "oidc_logout_sender": False}
    )


@pytest.fixture(scope="session")
def console_app(console_settings: Settings) -> Iterator[FastAPI]:
    application = create_app(console_settings)
    yield application
    application.state.engine.dispose()


def csrf_of(html: str) -> str:
    """The CSRF token a console page put in its forms."""
    found = _CSRF.search(html)
    assert found, html
    return found.group(1)


def browser_for(app: FastAPI) -> TestClient:
    """A user agent with a cookie jar that does not follow redirects (the tests look at each hop)."""
    return TestClient(app, base_url=BASE, follow_redirects=False)


@pytest.fixture(scope="session")
def operator_cookies(console_app: FastAPI) -> list[Cookie]:
    """The bootstrap operator signed in once per database (scrypt makes each sign-in cost ~0.5 s)."""
    client = browser_for(console_app)
    page = client.get("/console/login")
    response = client.post(
        "/console/login", data={"username": "admin", "password": PASSWORD, "csrf": csrf_of(page.text), "next": ""}
    )
    assert response.status_code == 303, response.text
    cookies = list(client.cookies.jar)
    client.close()
    return cookies


@pytest.fixture
def operator(console_app: FastAPI, operator_cookies: list[Cookie]) -> Iterator[TestClient]:
    client = browser_for(console_app)
    for cookie in operator_cookies:
        client.cookies.jar.set_cookie(cookie)
    yield client
    client.close()
