"""Alembic environment: Entente's metadata, the URL from Settings (or the caller's Config)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import broker.models  # noqa: F401  (registers every table on SQLModel.metadata)
from broker.db import create_db_engine
from broker.settings import Settings

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    settings = Settings(database_url=_url())
    engine = create_db_engine(settings)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
