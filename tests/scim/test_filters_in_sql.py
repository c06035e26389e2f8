"""Filters execute in SQL: the page query carries the tenant, the predicate and the LIMIT, so the
database returns one page and no partner's users are ever loaded into Python to be filtered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.conftest import PartnerHandle


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SELECT over scim_user issued while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM scim_user" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_filter_runs_in_the_database(partner: PartnerHandle, statements: list[str]) -> None:
    for i in range(12):
        partner.create_user(f"user{i:02d}", title="Engineer" if i % 3 else "Manager")
    statements.clear()
    response = partner.client.get(
        "/Users", params={"filter": 'title eq "Manager" and emails[type eq "work"]', "count": 3}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["totalResults"] == 4 and body["itemsPerPage"] == 3
    pages = [s for s in statements if "count(" not in s.lower()]
    assert len(pages) == 1, statements
    page = " ".join(pages[0].split()).lower()
    assert "scim_user.partner_id =" in page
    assert "lower(scim_user.title) =" in page
    assert "scim_user.pk in (select scim_value.user_pk from scim_value where scim_value.partner_id =" in page
    assert " limit " in page
