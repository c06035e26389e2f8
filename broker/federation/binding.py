"""Identity binding: which of the partner's SCIM people an upstream identity is.

The connection's ``binding_key`` decides (``broker.federation.models.BindingKey``):

- ``externalId``: the person whose ``externalId`` equals the upstream subject (``sub`` / NameID), exactly;
- ``userName``: the person whose ``userName`` equals the connection's ``username_claim`` (case-insensitive,
  as SCIM compares userName, RFC 7643 §4.1.1);
- ``email``: the person with that address among their ``emails``, only when the IdP says the address is
  verified (``email_verified`` is JSON ``true``) and its domain is one the partner verified.

Only the connection's own partner is ever searched, so no identity binds across partners, whatever
its claims say. Ambiguity (two people match) is a refusal, as is an inactive person. When nobody
matches and the connection allows just-in-time creation, the person is created through the SCIM
service layer (``broker.scim.users.create_user``), so the audit record and the joiner event are
written exactly as for a person the partner's feed pushed; JIT needs a verified address in one of
the partner's domains, whatever the binding key.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, select
from sqlmodel import Session

from broker.audit.log import Actor
from broker.errors import BadRequest, BrokerError
from broker.federation.base import FederatedIdentity, UnknownPerson, UntrustedIssuer
from broker.federation.models import BindingKey, IdPConnection
from broker.lifecycle.suspensions import suspended_subjects, suspension_covers
from broker.scim.auth import ScimCaller
from broker.scim.models import ScimUser, ScimValue
from broker.scim.normalize import CORE_USER
from broker.scim.resources import fold
from broker.scim.users import create_user
from broker.settings import Settings
from broker.tenants.models import Partner, PartnerStatus
from broker.tenants.service import normalize_domain, partner_domains

__all__ = ["BoundPerson", "bind_identity", "verified_partner_email"]

_NOBODY = ""
"""A subject id no person has: only a partner-wide suspension covers it (before a JIT person exists)."""


@dataclass(frozen=True)
class BoundPerson:
    """The partner's person an identity was bound to."""

    subject_id: str
    """The SCIM User id (``LoginSession.subject_id``)."""
    user_name: str
    created: bool
    """True when this login created the person (JIT)."""


def verified_partner_email(identity: FederatedIdentity, domains: frozenset[str]) -> str | None:
    """The identity's email if, and only if, the IdP verified it and its domain is one of ``domains``."""
    if identity.email is None or identity.email_verified is not True:
        return None
    local, at, domain = identity.email.rpartition("@")
    if not at or not local:
        return None
    with contextlib.suppress(BadRequest):
        if normalize_domain(domain) in domains:
            return identity.email
    return None


_USERS = ScimUser.__table__  # type: ignore[attr-defined]
_VALUES = ScimValue.__table__  # type: ignore[attr-defined]
_SUSPENDED = suspension_covers(_USERS.c.partner_id, _USERS.c.id)


def _matching(condition: ColumnElement[bool]) -> Select[Any]:
    """Up to two of the partner's people meeting ``condition`` on ``:value``: (id, user_name, active,
    suspended) rows, whether a kill switch covers them read with them (one round trip, not two)."""
    columns = (_USERS.c.id, _USERS.c.user_name, _USERS.c.active, _SUSPENDED.label("suspended"))
    return select(*columns).where(_USERS.c.partner_id == bindparam("partner_id"), condition).limit(2)


_MATCH = {
    BindingKey.EXTERNAL_ID: _matching(_USERS.c.external_id == bindparam("value")),
    BindingKey.USER_NAME: _matching(_USERS.c.user_name_ci == bindparam("value")),
    BindingKey.EMAIL: _matching(
        _USERS.c.pk.in_(
            select(_VALUES.c.user_pk).where(
                _VALUES.c.partner_id == bindparam("partner_id"),
                _VALUES.c.attribute == "emails",
                _VALUES.c.value_ci == bindparam("value"),
            )
        )
    ),
}
"""Prebuilt per binding key (built once, not per login)."""


def _match(session: Session, partner_id: str, key: BindingKey, value: str) -> list[Any]:
    return list(session.connection().execute(_MATCH[key], {"partner_id": partner_id, "value": value}).all())


def _domains(session: Session, partner_id: str) -> frozenset[str]:
    """The partner's verified domains: read only where an email decides (email binding, JIT creation)."""
    return frozenset(partner_domains(session=session, partner_id=partner_id))


def _candidates(session: Session, connection: IdPConnection, identity: FederatedIdentity) -> list[Any]:
    key = BindingKey(connection.binding_key)
    partner_id = connection.partner_id
    if key == BindingKey.EXTERNAL_ID:
        return _match(session, partner_id, key, identity.subject)
    if key == BindingKey.USER_NAME:
        values = identity.attributes.get(connection.username_claim, ())
        if len(values) != 1 or not values[0]:
            raise UnknownPerson(
                f"your identity provider did not send '{connection.username_claim}', which identifies you here"
            )
        return _match(session, partner_id, key, fold(values[0]))
    email = verified_partner_email(identity, _domains(session, partner_id))
    if email is None:
        raise UnknownPerson(
            "your identity provider did not send a verified email address in a domain of your organisation"
        )
    return _match(session, partner_id, key, fold(email))


def _create(
    session: Session,
    settings: Settings,
    partner: Partner,
    connection: IdPConnection,
    identity: FederatedIdentity,
    domains: frozenset[str],
) -> BoundPerson:
    email = verified_partner_email(identity, domains)
    if email is None:
        raise UnknownPerson(
            "you are not in your organisation's directory here, and without a verified email address in one of "
            "its domains no account can be created for you"
        )
    user_name = email
    if connection.binding_key == BindingKey.USER_NAME:
        user_name = identity.attributes[connection.username_claim][0]
    payload: dict[str, Any] = {
        "schemas": [CORE_USER],
        "userName": user_name,
        "externalId": identity.subject,
        "emails": [{"value": email, "type": "work", "primary": True}],
        "active": True,
    }
    names = identity.attributes.get("name", ())
    if names:
        payload["displayName"] = names[0]
    caller = ScimCaller(
        partner_id=partner.id,
        partner_slug=partner.slug,
        domain_policy=partner.domain_policy,
        domains=domains,
        actor=Actor(kind="idp_connection", id=connection.id),
        base_url=settings.public_base_url.rstrip("/") + "/scim/v2",
        settings=settings,
    )
    try:
        user = create_user(session=session, caller=caller, payload=payload)
    except BrokerError as error:
        raise UnknownPerson(f"an account could not be created for you: {error.detail}") from error
    return BoundPerson(subject_id=user.id, user_name=user_name, created=True)


def bind_identity(
    *, session: Session, settings: Settings, connection: IdPConnection, identity: FederatedIdentity
) -> BoundPerson:
    """The active person of the connection's partner this identity is, or a ``FederationError``.

    Writes only for JIT creation, in the caller's transaction (the caller commits).
    """
    if identity.tenant_id != connection.partner_id or identity.issuer != connection.issuer:
        raise UntrustedIssuer("this identity was not asserted by the identity provider of this sign-in")
    partner = session.get(Partner, connection.partner_id)
    if partner is None or partner.status != PartnerStatus.ACTIVE:
        raise UntrustedIssuer("your organisation's access to Entente is suspended")
    found = _candidates(session, connection, identity)
    if len(found) > 1:
        raise UnknownPerson(
            "more than one person of your organisation matches this sign-in; ask your administrator to fix the "
            "directory"
        )
    if not found:
        if connection.jit:
            if suspended_subjects(session, partner_id=partner.id, subject_ids=[_NOBODY]):  # partner-wide only
                raise UnknownPerson(f"{partner.name}'s access through Entente is suspended by its operator")
            return _create(session, settings, partner, connection, identity, _domains(session, partner.id))
        raise UnknownPerson(
            f"you are not (yet) in {partner.name}'s directory at Entente; ask your administrator to provision you"
        )
    person = found[0]
    if not person.active:
        raise UnknownPerson(f"your account at Entente is deactivated by {partner.name}")
    if person.suspended:
        raise UnknownPerson("your access through Entente is suspended by its operator (kill switch)")
    return BoundPerson(subject_id=person.id, user_name=person.user_name, created=False)
