"""Connector tests run async through the anyio pytest plugin, on asyncio only (what the broker runs on)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """One backend: the broker's outbox worker runs on asyncio."""
    return "asyncio"
