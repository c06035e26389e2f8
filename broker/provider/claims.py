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
from sqlmodel import Session, select

from broker.lifecycle.facts import Person, load_people
from broker.lifecycle.grants import AccessGrant
from broker.types import utcnow

__all__ = ["Principal", "admit", "identity_claims"]

_PROFILE = {"name": "displayName", "given_name": "name.givenName", "family_name": "name.familyName"}


@dataclass(frozen=True)
class Principal:
    """A person admitted to one workspace: the authlib "user" of every grant."""

    partner_id: str
    subject_id: str
    session_id: str
    """The LoginSession id: the ``sid`` of ID and logout tokens."""
    auth_time: dt.datetime
    person: Person
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
    grant = session.exec(
        select(AccessGrant).where(
            AccessGrant.partner_id == partner_id,
            AccessGrant.subject_id == subject_id,
            AccessGrant.workspace_id == workspace_id,
        )
    ).first()
    if grant is None or (grant.until is not None and grant.until <= now):
        return None
    person = load_people(session, partner_id=partner_id, subject_ids=[subject_id]).get(subject_id)
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


def identity_claims(principal: Principal, scope: str) -> dict[str, Any]:
    """The claims about the person for this scope (OIDC Core §5.1, §5.4), plus Entente's own.

    Always: ``sub``, ``partner`` (the partner's slug), ``groups`` (the person's partner groups,
    nested ones resolved) and ``roles`` (what the grant gives in this workspace). ``profile`` adds
    the names, ``email`` the primary email in a verified domain (so ``email_verified`` is true) —
    no email claim at all when the person has none in a verified domain.
    """
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
