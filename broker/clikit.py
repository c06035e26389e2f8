"""What every `entente` subcommand shares: the acting operator, a checked session, one-line errors."""

from __future__ import annotations

import datetime as dt
import getpass

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from broker.audit.log import Actor
from broker.db import create_db_engine
from broker.errors import BrokerError
from broker.settings import Settings
from broker.tenants.models import Partner

__all__ = ["actor", "database_error", "fail", "open_session", "parse_duration"]


def actor() -> Actor:
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return Actor(kind="cli", id=user)


def database_error(settings: Settings, exc: SQLAlchemyError) -> None:
    """Exit 1 naming the database (password hidden) and the driver's first line of reason: no traceback."""
    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    url = make_url(settings.database_url).render_as_string(hide_password=True)
    typer.echo(f"error: database {url}: {reason} (is it reachable, and has `entente migrate` run?)", err=True)
    raise typer.Exit(code=1)


def open_session(settings: Settings) -> Session:
    """A session on a database known to be reachable and migrated, else a one-line error and exit 1."""
    session = Session(create_db_engine(settings), expire_on_commit=False)
    try:
        session.exec(select(Partner.id).limit(1)).first()
    except SQLAlchemyError as exc:
        session.close()
        database_error(settings, exc)
    return session


def fail(error: BrokerError) -> None:
    typer.echo(f"error: {error.detail}", err=True)
    raise typer.Exit(code=1)


def parse_duration(text: str) -> dt.timedelta:
    """'90d', '12h', '30m' or a number of days."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    text = text.strip().lower()
    try:
        if text[-1:] in units:
            return dt.timedelta(**{units[text[-1]]: int(text[:-1])})
        return dt.timedelta(days=int(text))
    except (ValueError, OverflowError) as exc:  # OverflowError: more days than a timedelta holds
        raise typer.BadParameter(f"'{text}' is not a duration like 90d, 12h or 30m") from exc
