"""Bearer authentication for the SCIM API: the token alone decides the partner (RFC 6750)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from broker.audit.log import Actor
from broker.db import SessionDep
from broker.errors import Unauthorized
from broker.settings import Settings
from broker.tenants.service import authenticate_scim_token, partner_domains

__all__ = ["ScimCaller", "ScimCallerDep", "scim_caller"]


@dataclass(frozen=True)
class ScimCaller:
    """Who is calling and for which partner; every SCIM service call takes one."""

    partner_id: str
    partner_slug: str
    domain_policy: str
    domains: frozenset[str]
    actor: Actor
    base_url: str
    """Absolute SCIM base URL for meta.location, e.g. https://entente.example/scim/v2."""
    settings: Settings


def scim_caller(request: Request, session: SessionDep) -> ScimCaller:
    """Resolve the Authorization header to a ScimCaller, or raise Unauthorized with the reason."""
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'", credentials_sent=False)
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("Authorization must use the Bearer scheme", credentials_sent=False)
    partner, token = authenticate_scim_token(session=session, presented=credential.strip())
    used = bool(session.dirty)  # read before the next query autoflushes it
    domains = frozenset(partner_domains(session=session, partner_id=partner.id))
    if used:
        session.commit()  # persists last_used_at (at most once a minute); nothing else is pending yet
    settings: Settings = request.app.state.settings
    return ScimCaller(
        partner_id=partner.id,
        partner_slug=partner.slug,
        domain_policy=partner.domain_policy,
        domains=domains,
        actor=Actor(kind="scim_token", id=token.id),
        base_url=settings.public_base_url.rstrip("/") + "/scim/v2",
        settings=settings,
    )


ScimCallerDep = Annotated[ScimCaller, Depends(scim_caller)]
