"""`entente serve` sets Python's thread switch interval: 0.5 ms on PostgreSQL, 5 ms on SQLite, or as configured."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from broker.main import app_from_environment, switch_interval_seconds
from broker.settings import Settings


@pytest.mark.parametrize(
    ("url", "configured", "expected"),
    [
        ("postgresql+psycopg://u@127.0.0.1/x", None, 0.0005),
        ("sqlite:///./entente.db", None, 0.005),
        ("sqlite:///./entente.db", 1.0, 0.001),
        ("postgresql+psycopg://u@127.0.0.1/x", 2.5, 0.0025),
    ],
    ids=["postgresql default", "sqlite default", "sqlite configured", "postgresql configured"],
)
def test_the_interval_follows_the_database_unless_set(url: str, configured: float | None, expected: float) -> None:
    settings = Settings(database_url=url, thread_switch_interval_ms=configured)
    assert switch_interval_seconds(settings) == pytest.approx(expected)


@pytest.fixture
def restored_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("restored_interval")
def test_the_serve_factory_applies_it(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("ENTENTE_DATABASE_URL", database_url)
    monkeypatch.setenv("ENTENTE_THREAD_SWITCH_INTERVAL_MS", "0.7")
    app_from_environment()
    assert sys.getswitchinterval() == pytest.approx(0.0007)
