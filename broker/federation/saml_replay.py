"""One-time use of SAML assertions (saml-profiles §4.1.4.5): a replay ledger kept in the database.

A bearer assertion is a password for as long as it is valid: whoever holds it (a proxy log, a
browser history, a stolen form post) could sign in with it again. Entente records every accepted
assertion's ID, per connection, until its last ``NotOnOrAfter`` (plus the clock skew); a second use
is refused. The record is a primary-key insert, so two processes (or two workers) that receive the
same assertion at the same moment cannot both accept it: the database lets exactly one insert
commit (PostgreSQL's unique index; SQLite's single writer), and the other is ``ReplayDetected``.

Only assertions that passed every other check (signature included) are recorded, so nobody can fill
the table with forged IDs; expired records are deleted by the next accepted login.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from sqlalchemy import Column, Index, delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col

from broker.federation.base import ReplayDetected
from broker.types import UTCDateTime, utcnow

__all__ = ["AssertionLedger", "DatabaseLedger", "SamlAssertionUse"]


class SamlAssertionUse(SQLModel, table=True):
    """An accepted SAML assertion, kept until it could no longer be accepted anyway."""

    __tablename__ = "saml_assertion_use"
    __table_args__ = (Index("ix_saml_assertion_use_expires", "expires_at"),)

    connection_id: str = Field(primary_key=True, max_length=130)
    """The IdP connection the assertion was addressed to (its audience); no foreign key, so a unique
    violation here can only mean a replay."""
    assertion_id: str = Field(primary_key=True, max_length=256)
    """The assertion's ``ID`` attribute (xs:ID; Entente refuses longer than 256 characters)."""
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    """The assertion's last ``NotOnOrAfter`` plus the clock skew: after this, it is refused as expired."""
    used_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AssertionLedger(Protocol):
    """Where accepted assertion IDs are remembered."""

    def consume(self, *, connection_id: str, assertion_id: str, expires_at: dt.datetime) -> None:
        """Record the assertion as used, or raise ``ReplayDetected`` if it was used before."""
        ...


class DatabaseLedger:
    """``AssertionLedger`` in the ``saml_assertion_use`` table; safe across processes (module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def consume(self, *, connection_id: str, assertion_id: str, expires_at: dt.datetime) -> None:
        """Blocking (run it in the thread pool); commits its own short transaction."""
        with Session(self._engine) as session:
            session.exec(delete(SamlAssertionUse).where(col(SamlAssertionUse.expires_at) < utcnow()))
            session.add(SamlAssertionUse(connection_id=connection_id, assertion_id=assertion_id, expires_at=expires_at))
            try:
                session.commit()
            except IntegrityError as exc:
                session.rollback()
                raise ReplayDetected(
                    "this SAML assertion was already used to sign in; each one is accepted once (replay)"
                ) from exc
