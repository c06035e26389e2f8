"""The OpenID Provider's HTTP edge under ``/oidc``: reads requests, runs the server, maps errors.

Each route reads what it needs (query, urlencoded form, headers, the login cookie) on the event
loop, then runs ``EntenteAuthorizationServer`` in one worker thread with one database session,
committing only a successful answer. ``OAuth2Error`` becomes HTTP here and nowhere else
(broker.provider.errors). The router also runs the back-channel logout sender for the app's
lifetime (``oidc_logout_sender``).

    GET       /oidc/.well-known/openid-configuration   OIDC Discovery 1.0 §4 (also RFC 8414 §3 path)
    GET       /oidc/jwks                               RFC 7517 JWK Set
    GET|POST  /oidc/authorize                          RFC 6749 §4.1, OIDC Core §3.1.2, RFC 7636, RFC 9207
    POST      /oidc/token                              RFC 6749 §4.1.3, §6
    GET|POST  /oidc/userinfo                           OIDC Core §5.3
    POST      /oidc/revoke                             RFC 7009
    POST      /oidc/introspect                         RFC 7662
    GET|POST  /oidc/logout                             OIDC RP-Initiated Logout 1.0
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlmodel import Session

from broker.federation.pages import LOGIN_PATH, login_page
from broker.provider.discovery import issuer_of, provider_metadata
from broker.provider.errors import InvalidRequestError, OAuth2Error
from broker.provider.keys import key_ring
from broker.provider.logout import LogoutSender
from broker.provider.requests import EntenteRequest, LoginNeeded, OAuthResponse
from broker.provider.server import EntenteAuthorizationServer
from broker.sessions.models import LoginSession
from broker.sessions.service import COOKIE_NAME, find_session
from broker.settings import Settings
from broker.threads import in_thread

__all__ = ["authorization_after_login", "render_oauth", "router"]

AUTHORIZE_PATH = "/oidc/authorize"
MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 64
_HTML = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
]
"""Headers of the provider's own pages (the logout confirmation): never cached, never framed (RFC 9700
§4.16 clickjacking), no ``Referer`` leaving them (§4.2.2), no content sniffing."""
_REDIRECTS = (301, 302, 303)
_SIGNED_OUT = "<!doctype html><title>Signed out</title><p>You are signed out of Entente.</p>"

Work = Callable[[EntenteAuthorizationServer, EntenteRequest], OAuthResponse]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the back-channel logout sender beside the app (after create_app's lifespan has started)."""
    settings: Settings = app.state.settings
    if not settings.oidc_logout_sender:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(LogoutSender(engine=app.state.engine, settings=settings).run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


router = APIRouter(lifespan=_lifespan)


def _pairs(text: str) -> list[tuple[str, str]]:
    """RFC 6749 §3.1: parameters without a value are treated as omitted."""
    try:
        return parse_qsl(text, keep_blank_values=False, strict_parsing=False, max_num_fields=MAX_FIELDS)
    except ValueError as exc:
        raise InvalidRequestError("too many parameters") from exc


async def _form(request: Request) -> list[tuple[str, str]]:
    """The ``application/x-www-form-urlencoded`` body of a POST (RFC 6749 §3.2, RFC 7009 §2.1, RFC 7662 §2.1)."""
    if request.method != "POST":
        return []
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequestError("the request body is too large")
    if not body:
        return []
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise InvalidRequestError("the body must be application/x-www-form-urlencoded")
    try:
        return _pairs(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequestError("the body is not UTF-8") from None


def render_oauth(response: OAuthResponse, *, method: str = "GET") -> Response:
    """The Starlette response; every redirect is uncached and sends no ``Referer`` on (RFC 9700 §4.2.4),
    and a redirect answering a POST is a 303, which makes the browser follow with a GET and never
    re-send the form (authlib answers 302; RFC 9700 §4.12: never a 307, a 303 after a POST)."""
    body = response.body
    content = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    status = 303 if method == "POST" and response.status == 302 else response.status
    rendered = Response(content=content, status_code=status)
    for name, value in response.headers:
        rendered.headers.append(name, value)
    if status in _REDIRECTS:
        if "cache-control" not in rendered.headers:
            rendered.headers["Cache-Control"] = "no-store"
        if "referrer-policy" not in rendered.headers:
            rendered.headers["Referrer-Policy"] = "no-referrer"
    return rendered


async def _serve(
    request: Request, work: Work, *, login: bool = False, render: Callable[..., Response] = render_oauth
) -> Response:
    """Read the request, run ``work`` in one thread with one session; commit only a successful answer."""
    settings: Settings = request.app.state.settings
    engine = request.app.state.engine
    try:
        form = await _form(request)
        query = _pairs(request.url.query)
    except OAuth2Error as error:
        return render_oauth(OAuthResponse(*error()), method=request.method)
    cookie = request.cookies.get(COOKIE_NAME) if login else None
    uri = f"{settings.public_base_url.rstrip('/')}{request.url.path}"

    def run() -> OAuthResponse:
        with Session(engine, expire_on_commit=False) as session:
            server = EntenteAuthorizationServer(session=session, settings=settings)
            try:
                oauth_request = EntenteRequest(
                    method=request.method,
                    uri=uri,
                    headers=request.headers,
                    query=query,
                    form=form,
                    login=find_session(session, cookie_value=cookie) if login else None,
                )
                response = work(server, oauth_request)
            except OAuth2Error as error:
                session.rollback()
                return OAuthResponse(*error())
            if response.status < 400:
                session.commit()
            else:
                session.rollback()
            return response

    return render(await in_thread(request.app.state, run), method=request.method)


def _authorize(settings: Settings) -> Work:
    return lambda server, request: server.authorization_response(
        request, login_path=settings.oidc_login_path, endpoint=AUTHORIZE_PATH
    )


def authorization_after_login(
    session: Session, settings: Settings, *, next_path: str, login: LoginSession, headers: Mapping[str, str]
) -> OAuthResponse | None:
    """The authorization request a login was for, answered in the login's own transaction (the caller
    commits both); ``None`` when ``next_path`` is not one.

    Saves the browser's hop back to ``/oidc/authorize``: the request is validated exactly as if the
    browser had made it with the new session. A refusal writes nothing (a code is saved last), so the
    login stands whatever the answer.
    """
    path, _, query = next_path.partition("?")
    if path != AUTHORIZE_PATH:
        return None
    server = EntenteAuthorizationServer(session=session, settings=settings)
    try:
        request = EntenteRequest(
            method="GET",
            uri=f"{settings.public_base_url.rstrip('/')}{AUTHORIZE_PATH}",
            headers=headers,
            query=_pairs(query),
            login=login,
        )
        return _authorize(settings)(server, request)
    except OAuth2Error as error:
        return OAuthResponse(*error())


@router.get("/oidc/.well-known/openid-configuration")
@router.get("/.well-known/oauth-authorization-server/oidc")
async def discovery(request: Request) -> Response:
    return JSONResponse(
        provider_metadata(request.app.state.settings), headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get("/oidc/jwks")
async def jwks(request: Request) -> Response:
    """The JWK Set: keys about to sign, the one signing, and retired ones whose tokens may still live."""
    settings: Settings = request.app.state.settings

    def run() -> dict[str, object]:
        with Session(request.app.state.engine, expire_on_commit=False) as session:
            document = key_ring(session, settings=settings).jwks()
            session.commit()
            return dict(document)

    return JSONResponse(await in_thread(request.app.state, run), headers={"Cache-Control": "public, max-age=300"})


@router.api_route("/oidc/authorize", methods=["GET", "POST"])
async def authorize(request: Request) -> Response:
    settings: Settings = request.app.state.settings

    def render(response: OAuthResponse, *, method: str) -> Response:
        """A browser without any session is asked Entente's own email question here, not sent to
        ``/login`` to be asked it (a round trip per login); a custom login page is redirected to."""
        if isinstance(response, LoginNeeded) and response.first_login and settings.oidc_login_path == LOGIN_PATH:
            return login_page(next_path=response.next_path)
        return render_oauth(response, method=method)

    return await _serve(request, _authorize(settings), login=True, render=render)


def _token(server: EntenteAuthorizationServer, request: EntenteRequest) -> OAuthResponse:
    repeated = [name for name, values in request.payload.datalist.items() if len(values) > 1]
    if repeated:
        raise InvalidRequestError(f"Multiple '{repeated[0]}' in request.")  # RFC 6749 §3.2
    response: OAuthResponse = server.create_token_response(request)
    return response


@router.post("/oidc/token")
async def token(request: Request) -> Response:
    return await _serve(request, _token)


@router.api_route("/oidc/userinfo", methods=["GET", "POST"])
async def userinfo(request: Request) -> Response:
    return await _serve(request, lambda server, req: server.userinfo_response(req))


@router.post("/oidc/revoke")
async def revoke(request: Request) -> Response:
    return await _serve(request, lambda server, req: server.create_endpoint_response("revocation", req))


@router.post("/oidc/introspect")
async def introspect(request: Request) -> Response:
    return await _serve(request, lambda server, req: server.create_endpoint_response("introspection", req))


def _confirmation(login: LoginSession) -> str:
    """What the confirmation form carries: only a browser holding the session's cookie page can know it."""
    return hashlib.sha256(f"entente-logout:{login.secret_sha256}".encode()).hexdigest()


def _confirm_page(request: EntenteRequest, login: LoginSession) -> str:
    fields = [*request.without("confirm"), ("confirm", _confirmation(login))]
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">' for name, value in fields
    )
    return (
        "<!doctype html><title>Sign out</title><p>Sign out of Entente and every workspace?</p>"
        f'<form method="post" action="/oidc/logout">{inputs}<button type="submit">Sign out</button></form>'
    )


def _logout(server: EntenteAuthorizationServer, request: EntenteRequest) -> OAuthResponse:
    """RP-Initiated Logout 1.0: with a valid ``id_token_hint`` at once; without one, after a confirmation."""
    try:
        end = server.validate_endpoint_request("end_session", request)
    except OAuth2Error as error:
        return OAuthResponse(*error())  # §4: no redirection on an invalid request
    login = request.login
    if end.needs_confirmation and login is not None:
        confirmed = request.method == "POST" and hmac.compare_digest(
            request.form.get("confirm", "").encode(), _confirmation(login).encode()
        )
        if not confirmed:
            return OAuthResponse(200, _confirm_page(request, login), list(_HTML))
    response: OAuthResponse = server.create_endpoint_response("end_session", end) or OAuthResponse(
        200, _SIGNED_OUT, list(_HTML)
    )
    secure = "; Secure" if issuer_of(server.settings).startswith("https:") else ""
    response.headers.append(("Set-Cookie", f"{COOKIE_NAME}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax{secure}"))
    return response


@router.api_route("/oidc/logout", methods=["GET", "POST"])
async def logout(request: Request) -> Response:
    return await _serve(request, _logout, login=True)
