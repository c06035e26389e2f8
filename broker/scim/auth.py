"""Bearer authentication for the SCIM API: the token alone decides the partner (RFC 6750).

Two steps. ``scim_caller``, an async dependency, verifies the token before the request body is
read: from ``broker.tenants.token_cache`` on the event loop when it was verified in the last
``scim_auth_cache_seconds``, else against the database in the thread pool. ``confirm_caller`` then
runs first in the request's own transaction and refuses a token revoked, expired or suspended since
(by this process or any other), so the cache never outlives a revocation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.audit.log import Actor
from broker.errors import Unauthorized
from broker.observability.http import bind_partner
from broker.settings import Settings
from broker.tenants.service import authenticate_scim_token, confirm_scim_token
from broker.tenants.token_cache import AuthenticatedToken, TokenCache, token_cache
from broker.threads import in_thread
from broker.types import utcnow

__all__ = ["ScimCaller", "ScimCallerDep", "confirm_caller", "scim_caller"]


@dataclass(frozen=True)
class ScimCaller:
    """Who is calling and for which partner; every SCIM service call takes one."""

    partner_id: str
    partner_slug: str
    domain_policy: str
    domains: frozenset[str]
    actor: Actor
    """``Actor("scim_token", <token id>)``."""
    base_url: str
    """Absolute SCIM base URL for meta.location, e.g. https://entente.example/scim/v2."""
    settings: Settings


def _credential(header: str | None) -> str:
    if not header:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'", credentials_sent=False)
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("Authorization must use the Bearer scheme", credentials_sent=False)
    return credential.strip()


def _authenticate(engine: Engine, cache: TokenCache, credential: str, ttl: float) -> AuthenticatedToken:
    with Session(engine, expire_on_commit=False) as session:
        token = authenticate_scim_token(session=session, presented=credential)
    cache.put(credential, token, ttl=ttl)
    return token


async def scim_caller(request: Request) -> ScimCaller:
    """Resolve the Authorization header to a ScimCaller, or raise Unauthorized with the reason."""
    credential = _credential(request.headers.get("authorization"))
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    cache = token_cache(engine)
    ttl = settings.scim_auth_cache_seconds
    token = cache.get(credential, ttl=ttl, now=utcnow())
    if token is None:
        token = await in_thread(request.app.state, _authenticate, engine, cache, credential, ttl)
    bind_partner(token.partner_slug)  # labels this request's logs and SCIM metrics
    return ScimCaller(
        partner_id=token.partner_id,
        partner_slug=token.partner_slug,
        domain_policy=token.domain_policy,
        domains=token.domains,
        actor=Actor(kind="scim_token", id=token.token_id),
        base_url=settings.public_base_url.rstrip("/") + "/scim/v2",
        settings=settings,
    )


ScimCallerDep = Annotated[ScimCaller, Depends(scim_caller)]


def confirm_caller(session: Session, caller: ScimCaller) -> ScimCaller:
    """The caller, once its token is confirmed still usable in this transaction (with the partner's
    current domain policy, should an operator have switched it since the token was verified)."""
    policy = confirm_scim_token(session=session, token_id=caller.actor.id)
    return caller if policy == caller.domain_policy else dataclasses.replace(caller, domain_policy=policy)
