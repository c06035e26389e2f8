"""authlib's token endpoints bound to Entente: RFC 7009 revocation, RFC 7662 introspection, and OIDC
RP-Initiated Logout 1.0 (end session). Registered on ``EntenteAuthorizationServer``, which authlib
sets as each endpoint's ``server``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest

from broker.provider.clients import CONFIDENTIAL_METHODS, RegisteredClient
from broker.provider.errors import InvalidRequestError, UnsupportedTokenType
from broker.provider.grants import TOKEN_AUTH_METHODS
from broker.provider.keys import ALGORITHM
from broker.provider.requests import EntenteRequest
from broker.provider.revocation import end_login_session
from broker.provider.tokens import TokenRecord, revoke_access_token, revoke_families, token_record

if TYPE_CHECKING:
    from broker.provider.server import EntenteAuthorizationServer

__all__ = ["EndSession", "Introspection", "Revocation"]


class _TokenLookup:
    """Finding a token for RFC 7009 / RFC 7662 (``server`` is set by authlib's ``register_endpoint``)."""

    server: EntenteAuthorizationServer
    ADMISSION = True
    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")

    def check_params(self, request: EntenteRequest, client: RegisteredClient) -> None:
        """RFC 7009 §2.1 / RFC 7662 §2.1: ``token`` required; an unknown hint is ``unsupported_token_type``."""
        if "token" not in request.form:
            raise InvalidRequestError("Missing 'token' in request.")
        hint = request.form.get("token_type_hint")
        if hint and hint not in self.SUPPORTED_TOKEN_TYPES:
            raise UnsupportedTokenType()

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        server = self.server
        return token_record(
            server.session,
            server.keys,
            token=token_string,
            hint=token_type_hint,
            issuer=server.issuer,
            now=server.now,
            admission=self.ADMISSION,
        )


class Revocation(_TokenLookup, RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009: an access token is revoked alone; a refresh token takes its whole family (§2.1)."""

    CLIENT_AUTH_METHODS = TOKEN_AUTH_METHODS
    ADMISSION = False

    def revoke_token(self, token: TokenRecord, request: EntenteRequest) -> None:
        server = self.server
        if token.kind == "refresh_token":
            revoke_families(server.session, family_ids=[token.family_id], reason="revoked", now=server.now)
        else:
            revoke_access_token(server.session, jti=token.key, now=server.now)


class Introspection(_TokenLookup, IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662, for confidential clients; a token of another workspace's client is reported inactive."""

    CLIENT_AUTH_METHODS = list(CONFIDENTIAL_METHODS)

    def check_permission(self, token: TokenRecord, client: RegisteredClient, request: EntenteRequest) -> bool:
        return token.workspace_id == client.workspace_id

    def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
        """RFC 7662 §2.2 for an active token."""
        body: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "client_id": token.client_id,
            "username": token.user_name,
            "sub": token.subject_id,
            "aud": token.client_id,
            "iss": self.server.issuer,
            "exp": int(token.expires_at.timestamp()),
            "iat": int(token.issued_at.timestamp()),
            "sid": token.session_id,
        }
        if token.kind == "access_token":
            body["token_type"] = "Bearer"  # noqa: S105 - RFC 6750 token type
            body["jti"] = token.key
        return body


class EndSession(EndSessionEndpoint):  # type: ignore[misc]
    """OIDC RP-Initiated Logout 1.0 §2–§3: ends the browser's session, or the one the ID token names."""

    server: EntenteAuthorizationServer

    def get_server_jwks(self) -> dict[str, Any]:
        return self.server.keys.jwks()

    def get_algorithms(self) -> list[str]:
        return [ALGORITHM]

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        request: EntenteRequest = end_session_request.request
        sid = request.login.id if request.login else (end_session_request.id_token_claims or {}).get("sid")
        if isinstance(sid, str) and sid:
            end_login_session(self.server.session, session_id=sid, reason="logout", now=self.server.now)
