"""Alembic is the only way the schema is made: head matches the models, and it downgrades cleanly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import broker.models  # noqa: F401


def test_head_matches_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == [], f"models and migrations drifted: {diff}"


def test_every_table_is_made_by_alembic(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_downgrade_then_upgrade(database_url: str, tmp_path: pytest.TempPathFactory) -> None:
    """Run on a scratch database of the same backend so the shared one is untouched."""
    from alembic.config import Config

    from alembic import command
    from broker.db import _ALEMBIC_DIR
    from tests.conftest import PG_URL_BASE, _create_pg_database, _drop_pg_database

    if database_url.startswith("sqlite"):
        url, name = f"sqlite:///{tmp_path}/scratch.db", None
    else:
        name = _create_pg_database()
        url = f"{PG_URL_BASE}/{name}"
    try:
        config = Config()
        config.set_main_option("script_location", str(_ALEMBIC_DIR))
        config.set_main_option("sqlalchemy.url", url)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")
    finally:
        if name:
            _drop_pg_database(name)
