"""Who may get tokens for a workspace right now, and what ID tokens and UserInfo say about them (OIDC Core §5).

"A person gets tokens only for workspaces their grants allow": ``admit`` is asked at authorization,
at the code exchange, at every refresh and at introspection, so a person who left, or lost the
workspace, gets nothing new from the next request on. The subject (``sub``) is the SCIM User id
Entente assigned (a UUID, unique across partners): the same id the matrix connector stores as the
Synapse ``external_id``, so an OIDC login lands on the account Entente provisioned.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import scope_to_list
from sqlalchemy import ColumnElement, Select, and_, bindparam, select
from sqlmodel import Session

from broker.lifecycle.facts import Person, load_person
from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.suspensions import suspension_covers
from broker.scim.models import ScimUser
from broker.tenants.models import Partner, PartnerStatus
from broker.types import utcnow

__all__ = ["Principal", "admit", "admit_without_facts", "admitted", "identity_claims", "with_admission"]

_GRANTS = AccessGrant.__table__  # type: ignore[attr-defined]
_USERS = ScimUser.__table__  # type: ignore[attr-defined]
_PARTNERS = Partner.__table__  # type: ignore[attr-defined]
_SUSPENDED = suspension_covers(_GRANTS.c.partner_id, _GRANTS.c.subject_id)
_GRANT_OF = and_(
    _GRANTS.c.partner_id == bindparam("partner_id"),
    _GRANTS.c.subject_id == bindparam("subject_id"),
    _GRANTS.c.workspace_id == bindparam("workspace_id"),
)
_GRANT = (
    select(_GRANTS.c.role, _GRANTS.c.until, _PARTNERS.c.status, _SUSPENDED.label("suspended"))
    .select_from(_GRANTS.join(_PARTNERS, _PARTNERS.c.id == _GRANTS.c.partner_id))
    .where(_GRANT_OF)
)
"""The grant of one person for one workspace, its partner's status and whether a kill switch covers them."""
_ADMISSION_COLUMNS = (
    _GRANTS.c.role,
    _GRANTS.c.until,
    _PARTNERS.c.status,
    _SUSPENDED.label("suspended"),
    _USERS.c.active,
)
_ADMISSION = (
    select(*_ADMISSION_COLUMNS)
    .select_from(
        _GRANTS.join(_PARTNERS, _PARTNERS.c.id == _GRANTS.c.partner_id).join(
            _USERS, and_(_USERS.c.partner_id == _GRANTS.c.partner_id, _USERS.c.id == _GRANTS.c.subject_id)
        )
    )
    .where(_GRANT_OF)
)
"""``_GRANT`` plus the person's ``active`` flag (no row if the person or the partner is gone): one round trip."""


def with_admission(
    query: Select[Any], *, partner_id: ColumnElement[Any], subject_id: ColumnElement[Any]
) -> Select[Any]:
    """``query`` plus what ``_ADMISSION`` reads about the person its two columns name, for the workspace
    ``:workspace_id``: all ``None`` when there is no such grant, person or partner (which admits nobody).

    Lets a hot path (the refresh grant) admit in the query it makes anyway, one round trip fewer.
    """
    grant_on = and_(
        _GRANTS.c.partner_id == partner_id,
        _GRANTS.c.subject_id == subject_id,
        _GRANTS.c.workspace_id == bindparam("workspace_id"),
    )
    return (
        query.add_columns(*_ADMISSION_COLUMNS)
        .outerjoin(_GRANTS, grant_on)
        .outerjoin(_PARTNERS, _PARTNERS.c.id == _GRANTS.c.partner_id)
        .outerjoin(_USERS, and_(_USERS.c.partner_id == _GRANTS.c.partner_id, _USERS.c.id == _GRANTS.c.subject_id))
    )


def _live_grant(row: Any, now: dt.datetime) -> bool:
    """A grant row that admits: unexpired, partner active, no live suspension (the engine removes
    a suspended person's grants in the suspending transaction; checked again here regardless)."""
    return (
        row is not None
        and (row.until is None or row.until > now)
        and row.status == PartnerStatus.ACTIVE
        and not row.suspended
    )


_PROFILE = {"name": "displayName", "given_name": "name.givenName", "family_name": "name.familyName"}


@dataclass(frozen=True)
class Principal:
    """A person admitted to one workspace: the authlib "user" of every grant."""

    partner_id: str
    subject_id: str
    session_id: str
    """The LoginSession id: the ``sid`` of ID and logout tokens."""
    auth_time: dt.datetime
    person: Person | None
    """The SCIM facts for ID tokens and UserInfo; ``None`` when admitted by ``admit_without_facts``."""
    role: str
    """The role the person's grant gives in this workspace."""

    def get_user_id(self) -> str:
        return self.subject_id


def admit(
    session: Session,
    *,
    partner_id: str,
    subject_id: str,
    workspace_id: str,
    session_id: str,
    auth_time: dt.datetime,
    now: dt.datetime | None = None,
) -> Principal | None:
    """The person if they are active and a live grant gives them this workspace; ``None`` otherwise."""
    now = now or utcnow()
    key = {"partner_id": partner_id, "subject_id": subject_id, "workspace_id": workspace_id}
    grant = session.connection().execute(_GRANT, key).first()
    if grant is None or not _live_grant(grant, now):
        return None
    person = load_person(session, partner_id=partner_id, subject_id=subject_id)
    if person is None or not person.facts.active:
        return None
    return Principal(
        partner_id=partner_id,
        subject_id=subject_id,
        session_id=session_id,
        auth_time=auth_time,
        person=person,
        role=grant.role,
    )


def admit_without_facts(
    session: Session,
    *,
    partner_id: str,
    subject_id: str,
    workspace_id: str,
    session_id: str,
    auth_time: dt.datetime,
    now: dt.datetime | None = None,
) -> Principal | None:
    """``admit`` without the person's facts, in one query: where no ID token or UserInfo is made from
    them (the authorization endpoint, which only issues a code; the refresh grant).

    Refuses exactly what ``admit`` refuses (no grant, an expired one, a person gone or inactive, a
    partner gone, suspended or under the kill switch) but loads no groups, emails or attributes, so
    the ``Principal`` it returns has ``person=None``.
    """
    key = {"partner_id": partner_id, "subject_id": subject_id, "workspace_id": workspace_id}
    return admitted(
        session.connection().execute(_ADMISSION, key).first(),
        partner_id=partner_id,
        subject_id=subject_id,
        session_id=session_id,
        auth_time=auth_time,
        now=now or utcnow(),
    )


def admitted(
    row: Any, *, partner_id: str, subject_id: str, session_id: str, auth_time: dt.datetime, now: dt.datetime
) -> Principal | None:
    """The factless ``Principal`` an admission row (``_ADMISSION``, ``with_admission``) admits, or ``None``."""
    if row is None or row.role is None or not _live_grant(row, now) or not row.active:
        return None
    return Principal(
        partner_id=partner_id,
        subject_id=subject_id,
        session_id=session_id,
        auth_time=auth_time,
        person=None,
        role=row.role,
    )


def identity_claims(principal: Principal, scope: str) -> dict[str, Any]:
    """The claims about the person for this scope (OIDC Core §5.1, §5.4), plus Entente's own.

    Always: ``sub``, ``partner`` (the partner's slug), ``groups`` (the person's partner groups,
    nested ones resolved) and ``roles`` (what the grant gives in this workspace). ``profile`` adds
    the names, ``email`` the primary email in a verified domain (so ``email_verified`` is true) —
    no email claim at all when the person has none in a verified domain.
    """
    assert principal.person is not None, "identity claims need a principal from admit()"
    facts = principal.person.facts
    scopes = set(scope_to_list(scope) or [])
    claims: dict[str, Any] = {
        "sub": principal.subject_id,
        "partner": facts.tenant,
        "groups": sorted(facts.groups),
        "roles": [principal.role],
    }
    if "profile" in scopes:
        claims["preferred_username"] = facts.user_name
        for claim, path in _PROFILE.items():
            if facts.attributes.get(path):
                claims[claim] = facts.attributes[path]
        if "name" not in claims:
            joined = " ".join(p for p in (claims.get("given_name"), claims.get("family_name")) if p)
            claims["name"] = facts.attributes.get("name.formatted") or joined or facts.user_name
    if "email" in scopes and principal.person.email:
        claims["email"] = principal.person.email
        claims["email_verified"] = True
    return claims
