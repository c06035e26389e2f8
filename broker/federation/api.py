"""Federated login at Entente: home-realm discovery, the partner IdP round trip, the login session.

    GET  /login                        the email question (or, with ``login_hint``, straight to the IdP)
    POST /login                        email -> the partner that verified its domain -> 303 to its IdP
    GET  /login/{partner_slug}         a partner's direct link: its (first) IdP connection, 303 to the IdP
    GET  /login/callback/{connection}  the IdP's answer: verify, bind, start the session, 303 to ``next``
                                       (or, when ``next`` is ``/oidc/authorize?…``, its answer: the code)
    POST /login/callback/{connection}  the same for SAML: the ACS (HTTP-POST binding, ``RelayState`` = state)
    GET  /login/saml/{connection}/metadata  Entente's SAML SP metadata for that connection
    GET  /logout                       end this browser's session

``next`` (a same-origin path, else refused: no open redirect) is sealed into the login transaction
(``broker.federation.transaction``) at the start and followed only after a successful login. Every
refusal is an HTML page with the reason (400; 404 for an unknown partner or connection), never a 500,
and every completed or failed callback is audited. Blocking database work runs in the thread pool.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.responses import RedirectResponse, Response

from broker.audit.log import Actor, append_audit
from broker.errors import BrokerError, NotFound
from broker.federation.base import FederatedIdentity, FederationError
from broker.federation.binding import bind_identity
from broker.federation.cache import adapter_cache, callback_url, saml_entity_id
from broker.federation.models import IdPConnection, IdPProtocol
from broker.federation.pages import PAGE_HEADERS, error_page, login_page, message_page
from broker.federation.saml_form import posted_form
from broker.federation.saml_metadata import sp_metadata
from broker.federation.service import confirm_connection, first_connection, get_connection, partner_for_email
from broker.federation.transaction import (
    LoginTransaction,
    UnsafeRedirect,
    clear_cookie,
    open_transaction,
    safe_next,
    secure_cookies,
)
from broker.observability.metrics import observe_login
from broker.provider.api import authorization_after_login, render_oauth
from broker.provider.requests import OAuthResponse
from broker.scim.models import ScimUser
from broker.sessions.models import LoginSession
from broker.sessions.service import COOKIE_NAME, find_session, start_session
from broker.settings import Settings
from broker.tenants.models import Partner, PartnerStatus
from broker.tenants.service import get_partner
from broker.threads import in_thread
from broker.types import utcnow

__all__ = ["router"]

log = logging.getLogger("entente.federation")
router = APIRouter(include_in_schema=False)
MAX_FORM_BYTES = 8192


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _engine(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def _refusal(error: BrokerError) -> Response:
    if isinstance(error, NotFound):
        return error_page(error.detail, status=404, title="Not found")
    if error.status >= 500:
        log.error("login failed on a server error: %s", error.detail)
        return error_page("Entente could not complete the sign-in (a server error); please try later", status=500)
    return error_page(error.detail, status=error.status)


# --- database work (thread pool) -------------------------------------------------------------------


class UnknownDomain(FederationError):
    """No partner verified the domain of the email given at the login form (asked again, not refused)."""


def _signed_in_as(engine: Engine, cookie: str | None) -> str | None:
    with Session(engine) as session:
        row = find_session(session, cookie_value=cookie)
        if row is None:
            return None
        user = session.exec(
            select(ScimUser.user_name).where(ScimUser.partner_id == row.partner_id, ScimUser.id == row.subject_id)
        ).first()
        return user


def _connection_of(session: Session, partner: Partner, connection: IdPConnection | None) -> IdPConnection:
    """The partner's IdP connection for a login, detached; a FederationError if it cannot log anyone in."""
    if partner.status != PartnerStatus.ACTIVE:
        raise FederationError(f"{partner.name}'s access to Entente is suspended")
    if connection is None:
        raise FederationError(f"{partner.name} has no identity provider connected to Entente yet")
    session.expunge(connection)
    return connection


def _discover(engine: Engine, email: str) -> IdPConnection:
    """The IdP connection of the partner whose verified domain the email is in (home-realm discovery)."""
    with Session(engine, expire_on_commit=False) as session:
        found = partner_for_email(session=session, email=email)
        if found is None:
            domain = email.rpartition("@")[2] or email
            raise UnknownDomain(
                f"no organisation working through Entente uses the domain '{domain}'; check the address, "
                "or ask your administrator for your organisation's sign-in link"
            )
        return _connection_of(session, *found)


def _partner_connection(engine: Engine, slug: str) -> IdPConnection:
    with Session(engine, expire_on_commit=False) as session:
        partner = get_partner(session=session, slug=slug)
        return _connection_of(session, partner, first_connection(session=session, partner_id=partner.id))


def _load_connection(engine: Engine, connection_id: str) -> IdPConnection:
    with Session(engine, expire_on_commit=False) as session:
        connection = get_connection(session=session, connection_id=connection_id)
        session.expunge(connection)
        return connection


@dataclass(frozen=True)
class _Login:
    cookie_value: str
    authorization: OAuthResponse | None
    """The answer to the authorization request the login was for, if ``next`` is one."""


def _audit_failure(
    engine: Engine, connection: IdPConnection, error: BrokerError, identity: FederatedIdentity | None
) -> None:
    detail: dict[str, Any] = {"connection": connection.id, "error": type(error).__name__, "reason": error.detail}
    if identity is not None:
        detail.update(issuer=identity.issuer, subject=identity.subject)
    with Session(engine) as session:
        append_audit(
            session,
            actor=Actor(kind="idp_connection", id=connection.id),
            action="login.failed",
            partner_id=connection.partner_id,
            resource_type="IdPConnection",
            resource_id=connection.id[:64],
            detail=detail,
        )
        session.commit()
    observe_login(connection_id=connection.id, outcome="failed", reason=type(error).__name__)


def _finish_login(
    engine: Engine,
    settings: Settings,
    connection: IdPConnection,
    identity: FederatedIdentity,
    previous: str | None,
    next_path: str,
    headers: Mapping[str, str],
) -> _Login:
    """Confirm the connection, bind, end the browser's previous session, start the new one, audit, and
    answer the authorization request ``next`` names: one transaction."""
    with Session(engine, expire_on_commit=False) as session:
        confirm_connection(session=session, connection=connection)
        person = bind_identity(session=session, settings=settings, connection=connection, identity=identity)
        old = find_session(session, cookie_value=previous)
        if old is not None:
            old.ended_at, old.end_reason = utcnow(), "logout"
            session.add(old)
        started = start_session(
            session,
            identity=identity,
            subject_id=person.subject_id,
            lifetime=dt.timedelta(minutes=settings.login_session_minutes),
        )
        append_audit(
            session,
            actor=Actor(kind="idp_connection", id=connection.id),
            action="login.succeeded",
            partner_id=connection.partner_id,
            resource_type="User",
            resource_id=person.subject_id,
            detail={
                "connection": connection.id,
                "issuer": identity.issuer,
                "subject": identity.subject,
                "binding_key": connection.binding_key,
                "session_id": started.row.id,
                "jit": person.created,
            },
        )
        authorization = authorization_after_login(
            session, settings, next_path=next_path, login=started.row, headers=headers
        )
        session.commit()
    observe_login(connection_id=connection.id, outcome="succeeded")
    return _Login(cookie_value=started.cookie_value, authorization=authorization)


def _end_current(engine: Engine, cookie: str | None) -> LoginSession | None:
    with Session(engine, expire_on_commit=False) as session:
        row = find_session(session, cookie_value=cookie)
        if row is None:
            return None
        row.ended_at, row.end_reason = utcnow(), "logout"
        session.add(row)
        append_audit(
            session,
            actor=Actor(kind="login_session", id=row.id),
            action="logout",
            partner_id=row.partner_id,
            resource_type="User",
            resource_id=row.subject_id,
            detail={"session_id": row.id},
        )
        session.commit()
        return row


# --- routes ----------------------------------------------------------------------------------------


async def _begin(request: Request, connection: IdPConnection, next_path: str, hint: str | None) -> Response:
    settings = _settings(request)
    transaction = LoginTransaction.start(connection_id=connection.id, next_path=next_path)
    try:
        adapter = adapter_cache(request.app.state).get(connection, settings)
        response = await adapter.begin(request, state=transaction.state, nonce=transaction.secret, login_hint=hint)
    except BrokerError as error:
        await in_thread(request.app.state, _audit_failure, _engine(request), connection, error, None)
        return _refusal(error)
    transaction.set_cookie(response, settings, cross_site_post=adapter.protocol == IdPProtocol.SAML.value)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def _to_partner(request: Request, email: str, next_path: str) -> Response:
    """Home-realm discovery, then straight to that partner's IdP with the email as ``login_hint``.

    Not by way of ``/login/{slug}``: a browser's extra round trip to Entente on every login.
    """
    try:
        connection = await in_thread(request.app.state, _discover, _engine(request), email)
    except UnknownDomain as error:
        return login_page(next_path=next_path, email=email, error=error.detail, status=400)
    except BrokerError as error:
        return _refusal(error)
    return await _begin(request, connection, next_path, email)


@router.get("/login")
async def login_form(request: Request) -> Response:
    """The email question; with ``login_hint`` the question is skipped."""
    try:
        next_path = safe_next(request.query_params.get("next"))
    except UnsafeRedirect as error:
        return _refusal(error)
    hint = (request.query_params.get("login_hint") or "").strip()
    if hint:
        return await _to_partner(request, hint, next_path)
    signed_in = await in_thread(request.app.state, _signed_in_as, _engine(request), request.cookies.get(COOKIE_NAME))
    return login_page(next_path=next_path, signed_in_as=signed_in)


@router.post("/login")
async def login_submit(request: Request) -> Response:
    """The email form's answer (``application/x-www-form-urlencoded``: ``email``, ``next``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return error_page("the sign-in form must be sent as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():  # read at most MAX_FORM_BYTES, whatever Content-Length says
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return error_page("the sign-in form is too large")
    try:
        form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
    except ValueError:  # more fields than an email form has
        return error_page("the sign-in form has too many fields")
    try:
        next_path = safe_next((form.get("next") or [""])[0])
    except UnsafeRedirect as error:
        return _refusal(error)
    email = (form.get("email") or [""])[0].strip()
    if "@" not in email or len(email) > 320:
        return login_page(next_path=next_path, email=email, error="enter your work email address", status=400)
    return await _to_partner(request, email, next_path)


@router.get("/login/callback/{connection_id}")
async def login_callback(request: Request, connection_id: str) -> Response:
    """The IdP's authorization response (OIDC: a redirect): complete, bind, start the session, go to ``next``."""
    return await _callback(request, connection_id, state=request.query_params.get("state") or "")


@router.post("/login/callback/{connection_id}")
async def login_callback_post(request: Request, connection_id: str) -> Response:
    """A SAML connection's Assertion Consumer Service: the form's ``RelayState`` is the login's ``state``."""
    try:
        form = await posted_form(request)
    except BrokerError as error:
        return _refusal(error)
    return await _callback(request, connection_id, state=form.get("RelayState") or "", protocol=IdPProtocol.SAML.value)


@router.get("/login/saml/{connection_id}/metadata")
async def saml_metadata(request: Request, connection_id: str) -> Response:
    """Entente's SP metadata for a SAML connection: what the partner imports at its IdP."""
    try:
        connection = await in_thread(request.app.state, _load_connection, _engine(request), connection_id)
    except BrokerError as error:
        return _refusal(error)
    if connection.protocol != IdPProtocol.SAML:
        return _refusal(NotFound(f"no SAML IdP connection '{connection_id}'"))
    settings = _settings(request)
    xml = sp_metadata(entity_id=saml_entity_id(settings, connection.id), acs_url=callback_url(settings, connection.id))
    return Response(xml, media_type="application/samlmetadata+xml", headers={"Cache-Control": "no-cache"})


async def _callback(
    request: Request, connection_id: str, *, state: str, protocol: str = IdPProtocol.OIDC.value
) -> Response:
    """Complete the login of ``state`` at a connection of ``protocol`` (OIDC answers by GET, SAML by POST)."""
    settings, engine = _settings(request), _engine(request)
    # The connection this process began the login with, if it still has it: its version is confirmed
    # in _finish_login's transaction, so a login is never finished with a changed or removed one.
    connection = adapter_cache(request.app.state).connection(connection_id)
    if connection is None:
        try:
            connection = await in_thread(request.app.state, _load_connection, engine, connection_id)
        except BrokerError as error:
            return _refusal(error)
    if connection.protocol != protocol:
        method = "POST" if connection.protocol == IdPProtocol.SAML else "GET"
        return _refusal(
            FederationError(f"the identity provider of '{connection.id}' answers with an HTTP {method}, not this one")
        )
    identity: FederatedIdentity | None = None
    try:
        transaction = open_transaction(request, settings, connection_id=connection.id, state=state)
        adapter = adapter_cache(request.app.state).get(connection, settings)
        identity = await adapter.complete(request, state=transaction.state, nonce=transaction.secret)
        login = await in_thread(
            request.app.state,
            _finish_login,
            engine,
            settings,
            connection,
            identity,
            request.cookies.get(COOKIE_NAME),
            transaction.next_path,
            request.headers,
        )
    except BrokerError as error:
        await in_thread(request.app.state, _audit_failure, engine, connection, error, identity)
        refused = _refusal(error)
        clear_cookie(refused, settings, state)
        return refused
    response: Response = (
        RedirectResponse(transaction.next_path, status_code=303, headers=PAGE_HEADERS)
        if login.authorization is None
        else render_oauth(login.authorization, method="POST")  # a 303, as after any form
    )
    response.set_cookie(
        COOKIE_NAME,
        login.cookie_value,
        max_age=settings.login_session_minutes * 60,
        path="/",
        secure=secure_cookies(settings),
        httponly=True,
        samesite="lax",
    )
    transaction.clear_cookie(response, settings)
    return response


@router.get("/login/{partner_slug}")
async def partner_login(request: Request, partner_slug: str) -> Response:
    """A partner's direct sign-in link: no email question."""
    try:
        next_path = safe_next(request.query_params.get("next"))
        connection = await in_thread(request.app.state, _partner_connection, _engine(request), partner_slug)
    except BrokerError as error:
        return _refusal(error)
    return await _begin(request, connection, next_path, request.query_params.get("login_hint"))


@router.get("/logout")
async def logout(request: Request) -> Response:
    """End this browser's login session (only this one), then show a page or go to a same-site ``next``."""
    settings = _settings(request)
    try:
        next_path = safe_next(request.query_params.get("next"), default="")
    except UnsafeRedirect as error:
        return _refusal(error)
    await in_thread(request.app.state, _end_current, _engine(request), request.cookies.get(COOKIE_NAME))
    response: Response = (
        RedirectResponse(next_path, status_code=303, headers={"Cache-Control": "no-store"})
        if next_path
        else message_page("Signed out", "You are signed out of Entente.")
    )
    response.delete_cookie(COOKIE_NAME, path="/", secure=secure_cookies(settings), httponly=True, samesite="lax")
    return response
