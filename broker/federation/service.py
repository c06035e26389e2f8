"""IdP connections: add and list them (operators), find them for a login (home-realm discovery).

Keyword-only, with the session explicit; writes are audited in the same transaction and committed here.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.errors import BadRequest, Conflict, InvalidValue, NotFound
from broker.federation.base import FederationError
from broker.federation.models import BindingKey, IdPConnection, IdPProtocol
from broker.federation.saml_metadata import parse_idp_metadata
from broker.settings import Settings
from broker.tenants.models import Partner, PartnerDomain
from broker.tenants.service import get_partner, normalize_domain
from broker.workspaces.sealing import seal

__all__ = [
    "ConnectionRow",
    "add_oidc_connection",
    "add_saml_connection",
    "check_issuer",
    "confirm_connection",
    "first_connection",
    "get_connection",
    "list_connections",
    "partner_for_email",
]

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_CLAIM_RE = re.compile(r"^[A-Za-z0-9_:.\-/]{1,64}$")


@dataclass(frozen=True)
class ConnectionRow:
    """A connection with its partner's slug, for listings."""

    connection: IdPConnection
    partner_slug: str


def check_issuer(issuer: str) -> str:
    """An OIDC issuer identifier (OIDC Discovery §2, RFC 8414 §2): https, or http on a loopback address
    (tests, local IdPs); no query or fragment. Returned exactly as given: it must match ``iss`` byte for byte."""
    parts = urlsplit(issuer)
    if parts.query or parts.fragment or not parts.hostname:
        raise InvalidValue(f"issuer '{issuer}' must be an https URL without query or fragment")
    if parts.scheme == "https":
        return issuer
    if parts.scheme == "http":
        try:
            loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return issuer
    raise InvalidValue(f"issuer '{issuer}' must use https (plain http only on a loopback address)")


def _new_connection_id(session: Session, partner: Partner, name: str, username_claim: str) -> str:
    """The connection's id, once its name and username claim are valid and the partner has no such connection."""
    if not _NAME_RE.match(name):
        raise BadRequest(f"connection name '{name}' must be 1-64 lower-case letters, digits or inner hyphens")
    if not _CLAIM_RE.match(username_claim):
        raise BadRequest(f"'{username_claim}' is not a claim or attribute name of at most 64 characters")
    connection_id = f"{partner.slug}.{name}"
    if session.get(IdPConnection, connection_id) is not None:
        raise Conflict(f"partner '{partner.slug}' already has an IdP connection named '{name}'")
    return connection_id


def _record_added(session: Session, actor: Actor, connection: IdPConnection, **detail: Any) -> IdPConnection:
    """Store the new connection with its audit record (never a secret in it) and commit."""
    session.add(connection)
    append_audit(
        session,
        actor=actor,
        action="idp.connection.added",
        partner_id=connection.partner_id,
        resource_type="IdPConnection",
        resource_id=connection.id[:64],
        after={
            "id": connection.id,
            "protocol": connection.protocol,
            "issuer": connection.issuer,
            "binding_key": connection.binding_key,
            "username_claim": connection.username_claim,
            "jit": connection.jit,
            **detail,
        },
    )
    session.commit()
    return connection


def add_oidc_connection(
    *,
    session: Session,
    settings: Settings,
    partner_slug: str,
    issuer: str,
    client_id: str,
    client_secret: str,
    actor: Actor,
    name: str = "oidc",
    binding_key: BindingKey = BindingKey.EXTERNAL_ID,
    username_claim: str = "preferred_username",
    jit: bool = False,
) -> IdPConnection:
    """Add an OIDC IdP for a partner; the client secret is sealed, the audit record never holds it."""
    partner = get_partner(session=session, slug=partner_slug)
    connection_id = _new_connection_id(session, partner, name, username_claim)
    if not client_id.strip() or not client_secret:
        raise BadRequest("an OIDC connection needs a client id and a client secret")
    connection = IdPConnection(
        id=connection_id,
        partner_id=partner.id,
        protocol=IdPProtocol.OIDC.value,
        name=name,
        issuer=check_issuer(issuer),
        client_id=client_id.strip(),
        client_secret_sealed=seal(settings, {"client_secret": client_secret}),
        binding_key=binding_key.value,
        username_claim=username_claim,
        jit=jit,
    )
    return _record_added(session, actor, connection, client_id=connection.client_id)


def add_saml_connection(
    *,
    session: Session,
    partner_slug: str,
    metadata_xml: str,
    actor: Actor,
    name: str = "saml",
    binding_key: BindingKey = BindingKey.EXTERNAL_ID,
    username_claim: str = "mail",
    jit: bool = False,
    email_verified: bool = False,
) -> IdPConnection:
    """Add a SAML 2.0 IdP for a partner from its metadata (checked: ``InvalidMetadata`` fails closed).

    The metadata XML is stored as given and its entityID becomes the connection's issuer; its signing
    certificates are the only keys any assertion of this connection is ever verified with.
    ``email_verified``: the operator vouches that the IdP asserts only verified addresses.
    """
    partner = get_partner(session=session, slug=partner_slug)
    connection_id = _new_connection_id(session, partner, name, username_claim)
    metadata = parse_idp_metadata(metadata_xml)
    connection = IdPConnection(
        id=connection_id,
        partner_id=partner.id,
        protocol=IdPProtocol.SAML.value,
        name=name,
        issuer=metadata.entity_id,
        saml_metadata=metadata.xml,
        binding_key=binding_key.value,
        username_claim=username_claim,
        jit=jit,
        saml_email_verified=email_verified,
    )
    return _record_added(
        session,
        actor,
        connection,
        sso_url=metadata.sso_url,
        certificates_sha256=[
            hashlib.sha256(base64.b64decode(certificate)).hexdigest() for certificate in metadata.certificates
        ],
        email_verified=email_verified,
    )


def get_connection(*, session: Session, connection_id: str) -> IdPConnection:
    """The connection with this id, or NotFound."""
    connection = session.get(IdPConnection, connection_id) if len(connection_id) <= 130 else None
    if connection is None:
        raise NotFound(f"no IdP connection '{connection_id}'")
    return connection


_CONNECTIONS = IdPConnection.__table__  # type: ignore[attr-defined]
_CONFIRM = select(_CONNECTIONS.c.version, _CONNECTIONS.c.created_at).where(_CONNECTIONS.c.id == bindparam("id"))
"""Prebuilt: asked once per login."""


def confirm_connection(*, session: Session, connection: IdPConnection) -> None:
    """Refuse a login begun with a connection since changed, removed or remade (read in this transaction)."""
    current = session.connection().execute(_CONFIRM, {"id": connection.id}).first()
    if current is None or tuple(current) != (connection.version, connection.created_at):
        raise FederationError(
            "the organisation's identity provider settings changed during this sign-in; please start again"
        )


def _oldest_first(connection: Any) -> tuple[Any, Any]:
    """The order that makes a partner's first connection the one its people are sent to (oldest, then id)."""
    return col(connection.created_at), col(connection.id)


def list_connections(*, session: Session, partner_slug: str | None = None) -> list[ConnectionRow]:
    """Every connection (or one partner's), by partner slug then age."""
    statement = select(IdPConnection, Partner.slug).join(Partner, col(Partner.id) == IdPConnection.partner_id)
    if partner_slug is not None:
        statement = statement.where(Partner.slug == get_partner(session=session, slug=partner_slug).slug)
    statement = statement.order_by(col(Partner.slug), *_oldest_first(IdPConnection))
    return [ConnectionRow(connection=c, partner_slug=slug) for c, slug in session.exec(statement).all()]


def first_connection(*, session: Session, partner_id: str) -> IdPConnection | None:
    """The partner's oldest IdP connection: where its people are sent to log in."""
    return session.exec(
        select(IdPConnection).where(IdPConnection.partner_id == partner_id).order_by(*_oldest_first(IdPConnection))
    ).first()


def partner_for_email(*, session: Session, email: str) -> tuple[Partner, IdPConnection | None] | None:
    """Home-realm discovery: the partner that verified the email's domain and its first connection
    (``first_connection``; ``None`` if it has none yet), in one query; ``None`` for an unknown domain.

    Only the exact domain counts (``a@eng.acme.test`` does not match ``acme.test``); a malformed
    address or domain is ``None`` too.
    """
    local, at, domain = email.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    try:
        normalized = normalize_domain(domain)
    except BadRequest:
        return None
    oldest = aliased(IdPConnection)
    first = (
        select(oldest.id)
        .where(oldest.partner_id == Partner.id)
        .order_by(*_oldest_first(oldest))
        .limit(1)
        .correlate(Partner)
        .scalar_subquery()
    )
    found = session.exec(
        select(Partner, IdPConnection)
        .join(PartnerDomain, col(PartnerDomain.partner_id) == Partner.id)
        .outerjoin(IdPConnection, col(IdPConnection.id) == first)
        .where(PartnerDomain.domain == normalized)
    ).first()
    return (found[0], found[1]) if found is not None else None
