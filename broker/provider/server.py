"""authlib's framework-agnostic AuthorizationServer bound to Entente: the adapter authlib ships only for Flask/Django.

authlib has no async or FastAPI provider (authlib #278), so, as its Flask integration does, this
module supplies ``create_oauth2_request`` and ``handle_response`` (over ``EntenteRequest`` and
``OAuthResponse`` of broker.provider.requests), ``query_client`` and ``save_token``. One server is
built per request around that request's database session and clock, and runs in a worker thread
(authlib is synchronous).

Endpoints and the specs they implement:
- authorization (RFC 6749 §4.1.1–§4.1.2, OIDC Core §3.1.2, RFC 7636, RFC 9207 ``iss``);
- token (RFC 6749 §4.1.3, §6; OIDC Core §3.1.3) through ``broker.provider.grants``;
- UserInfo (OIDC Core §5.3, bearer per RFC 6750 §2.1/§2.2);
- revocation (RFC 7009), introspection (RFC 7662), end session (OIDC RP-Initiated Logout 1.0).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc9207 import IssuerParameter
from sqlmodel import Session

from broker.provider.claims import Principal, admit, admit_without_facts, identity_claims
from broker.provider.clients import RegisteredClient, find_client
from broker.provider.discovery import issuer_of
from broker.provider.endpoints import EndSession, Introspection, Revocation
from broker.provider.errors import (
    AccessDeniedError,
    InsufficientScopeError,
    InvalidTokenError,
    OAuth2Error,
)
from broker.provider.grants import (
    AuthorizationRequestRules,
    EntenteAuthorizationCodeGrant,
    EntenteCodeChallenge,
    EntenteOpenIDCode,
    EntenteRefreshTokenGrant,
)
from broker.provider.keys import KeyRing, key_ring
from broker.provider.requests import EntenteRequest, LoginNeeded, OAuthResponse
from broker.provider.tokens import (
    Issued,
    issue_access_token,
    new_refresh_token,
    open_family,
    record_tokens,
    token_record,
)
from broker.settings import Settings
from broker.types import utcnow

__all__ = ["EntenteAuthorizationServer"]

_JSON_NO_STORE = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]


class _Issuer(IssuerParameter):  # type: ignore[misc]
    """RFC 9207 §2: ``iss`` in every authorization response, errors included."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


class EntenteAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """One request's authorization server: its database session, settings and clock."""

    def __init__(self, *, session: Session, settings: Settings, now: dt.datetime | None = None) -> None:
        super().__init__(scopes_supported=None)  # unknown scopes are dropped per client (RFC 6749 §3.3)
        self.session = session
        self.settings = settings
        self.now = now or utcnow()
        self.issuer = issuer_of(settings)
        self._issued: Issued | None = None
        self._clients: dict[str | None, RegisteredClient | None] = {}
        self.used_nonces: dict[tuple[str, str], bool] = {}
        """``EntenteOpenIDCode.exists_nonce``'s answers in this request (authlib asks twice)."""
        self.register_token_generator("default", self._generate_token)
        self.register_grant(
            EntenteAuthorizationCodeGrant,
            [AuthorizationRequestRules(), EntenteCodeChallenge(required=True), EntenteOpenIDCode(self)],
        )
        self.register_grant(EntenteRefreshTokenGrant)
        for endpoint in (Revocation, Introspection, EndSession):
            self.register_endpoint(endpoint)
        self.register_extension(_Issuer(self.issuer))

    @cached_property
    def keys(self) -> KeyRing:
        """The signing and published keys, from this process's short-lived cache (broker.provider.keys)."""
        return key_ring(self.session, settings=self.settings, now=self.now, cached=True)

    # -- what authlib asks a framework integration for --------------------------------------------
    def query_client(self, client_id: str | None) -> RegisteredClient | None:
        """Read once per request: authlib asks again while answering an authorization request it
        has just validated (one more round trip to the database each time)."""
        if client_id not in self._clients:
            self._clients[client_id] = find_client(self.session, client_id=client_id)
        return self._clients[client_id]

    def create_oauth2_request(self, request: object) -> EntenteRequest:
        if not isinstance(request, EntenteRequest):
            raise TypeError("the edge builds an EntenteRequest for every call")
        return request

    def create_json_request(self, request: object) -> None:
        raise TypeError("no endpoint of Entente's provider takes a JSON body")

    def handle_response(self, status: int, body: Any, headers: Sequence[tuple[str, str]]) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals: revocations and logouts are audited where they happen."""

    def _generate_token(
        self,
        grant_type: str,
        client: RegisteredClient,
        user: Principal | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """RFC 6749 §5.1 token response: a JWT access token and (always, rotated) a refresh token."""
        assert user is not None, "every grant Entente offers has a person"
        scope = scope or ""
        seconds = self.settings.oidc_access_token_seconds
        access, jti, expires_at = issue_access_token(
            self.keys,
            issuer=self.issuer,
            client_id=client.client_id,
            principal=user,
            scope=scope,
            now=self.now,
            seconds=seconds,
        )
        refresh = new_refresh_token() if include_refresh_token else None
        refresh_expires = self.now + dt.timedelta(days=self.settings.oidc_refresh_token_days) if refresh else None
        self._issued = Issued(
            jti=jti, access_expires_at=expires_at, refresh_token=refresh, refresh_expires_at=refresh_expires
        )
        token: dict[str, Any] = {"token_type": "Bearer", "access_token": access, "expires_in": seconds, "scope": scope}
        if refresh:
            token["refresh_token"] = refresh
        return token

    def save_token(self, token: dict[str, Any], request: EntenteRequest) -> None:
        """Record what ``_generate_token`` made: a new family for a code, the same family for a refresh."""
        assert self._issued is not None
        if request.authorization_code is not None:
            family = open_family(
                self.session,
                client=request.client,
                principal=request.user,
                scope=token["scope"],
                now=self.now,
                settings=self.settings,
                family_id=request.authorization_code.family_id,  # the claim already named it on the code
            )
            family_id, family_expires_at = family.id, family.expires_at
        else:
            family_id, family_expires_at = request.refresh_token.family_id, request.refresh_token.expires_at
        record_tokens(
            self.session, family_id=family_id, family_expires_at=family_expires_at, issued=self._issued, now=self.now
        )

    # -- the authorization endpoint --------------------------------------------------------------
    def authorization_response(self, request: EntenteRequest, *, login_path: str, endpoint: str) -> OAuthResponse:
        """Validate the request, then make sure of the login, then of the grant, then issue a code.

        Invalid requests are refused before anything else (a bad client or redirect URI never
        reaches the login page). No live login session, ``prompt=login`` or an exceeded ``max_age``
        sends the browser to ``login_path?next=…`` (back here afterwards), with the request's
        ``login_hint`` when it is an email address (OIDC Core §3.1.2.1: the login page then skips its
        question). A person without a grant
        for the client's workspace gets ``access_denied`` (OIDC Core §3.1.2.6).
        """
        login = request.login
        try:
            grant = self.get_consent_grant(request, end_user=login)
        except OAuth2Error as error:
            return self.authorization_error(error)
        data = request.payload.data
        prompts = (data.get("prompt") or "").split()
        max_age = data.get("max_age")
        if (
            login is None
            or "login" in prompts
            or (max_age is not None and login.created_at < self.now - dt.timedelta(seconds=int(max_age)))
        ):
            # The login about to happen satisfies prompt=login and max_age (max_age=0 would send it back again).
            back = f"{endpoint}?{urlencode(request.without('prompt', 'max_age'))}"
            hint = data.get("login_hint") or ""
            query = {"next": back, **({"login_hint": hint} if "@" in hint else {})}  # an email: skips the question
            return LoginNeeded(
                302,
                "",
                [("Location", f"{login_path}?{urlencode(query)}")],
                next_path=back,
                first_login=login is None and "login_hint" not in query,
            )
        client: RegisteredClient = grant.request.client
        principal = admit_without_facts(  # a code carries no claims: the exchange admits again, with facts
            self.session,
            partner_id=login.partner_id,
            subject_id=login.subject_id,
            workspace_id=client.workspace_id,
            session_id=login.id,
            auth_time=login.created_at,
            now=self.now,
        )
        if principal is None:
            denied = AccessDeniedError(
                "your access to this workspace is not granted", redirect_uri=grant.redirect_uri, state=data.get("state")
            )
            return self.authorization_error(denied)
        response: OAuthResponse = self.create_authorization_response(request, grant_user=principal, grant=grant)
        return response

    def authorization_error(self, error: OAuth2Error) -> OAuthResponse:
        """A redirect to the validated redirect URI with ``error``, ``state`` and ``iss``; else a JSON body."""
        response = OAuthResponse(*error())
        if error.redirect_uri:
            _Issuer(self.issuer).add_issuer_parameter(self, response)
        return response

    # -- UserInfo --------------------------------------------------------------------------------
    def userinfo_response(self, request: EntenteRequest) -> OAuthResponse:
        """OIDC Core §5.3: the claims of the token's person, live (a leaver's token answers 401 at once)."""
        header = request.headers.get("Authorization") or ""
        scheme, _, credential = header.partition(" ")
        token = credential.strip() if scheme.lower() == "bearer" else request.form.get("access_token", "")
        if not token:
            return OAuthResponse(
                401, {"error": "invalid_request"}, [*_JSON_NO_STORE, ("WWW-Authenticate", 'Bearer realm="entente"')]
            )
        record = token_record(
            self.session, self.keys, token=token, hint="access_token", issuer=self.issuer, now=self.now
        )
        if record is None or record.kind != "access_token" or record.is_revoked() or record.is_expired():
            raise InvalidTokenError(realm="entente")
        if "openid" not in record.scope.split():
            raise InsufficientScopeError()
        client = find_client(self.session, client_id=record.client_id)
        principal = None
        if client is not None:
            principal = admit(
                self.session,
                partner_id=record.partner_id,
                subject_id=record.subject_id,
                workspace_id=client.workspace_id,
                session_id=record.session_id,
                auth_time=record.issued_at,
                now=self.now,
            )
        if principal is None:
            raise InvalidTokenError(realm="entente")
        return OAuthResponse(200, identity_claims(principal, record.scope), list(_JSON_NO_STORE))
