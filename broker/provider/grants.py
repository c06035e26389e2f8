"""The grants Entente issues tokens through, as authlib grant classes.

- Authorization code (RFC 6749 §4.1) with OpenID Connect (OIDC Core §3.1): codes live
  ``oidc_code_seconds`` (60 s), are stored as SHA-256 and used once; a replayed code revokes what
  it produced (RFC 6749 §4.1.2). ``nonce`` is required and never reused per client.
- PKCE (RFC 7636) with S256 only: a challenge without ``code_challenge_method`` would mean
  ``plain`` and is refused, so there is no downgrade (RFC 9700 §2.1.1, §4.8); public clients must
  send one.
- Refresh token (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2): every use
  returns a new refresh token; a rotated one presented again revokes the whole family.

Every exchange asks ``claims.admit`` again: a person who left, or lost the workspace, gets nothing.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc7636 import CodeChallenge, create_s256_code_challenge
from authlib.oidc.core import OpenIDCode, UserInfo
from sqlalchemy import and_, bindparam, insert, update
from sqlalchemy import select as core_select

from broker.provider.claims import Principal, admit, admitted, identity_claims
from broker.provider.clients import CONFIDENTIAL_METHODS, RegisteredClient, sha256_hex
from broker.provider.errors import (
    InvalidGrantError,
    InvalidRequestError,
    RequestNotSupportedError,
    RequestURINotSupportedError,
)
from broker.provider.keys import ALGORITHM
from broker.provider.models import AuthorizationCode
from broker.provider.tokens import find_and_claim_refresh_token, new_family_id, revoke_families
from broker.sessions.models import LoginSession

if TYPE_CHECKING:
    from joserfc.jwk import RSAKey

    from broker.provider.requests import EntenteRequest
    from broker.provider.server import EntenteAuthorizationServer

__all__ = [
    "AuthorizationRequestRules",
    "CodeView",
    "EntenteAuthorizationCodeGrant",
    "EntenteCodeChallenge",
    "EntenteOpenIDCode",
    "EntenteRefreshTokenGrant",
    "RefreshView",
    "TOKEN_AUTH_METHODS",
]

TOKEN_AUTH_METHODS = [*CONFIDENTIAL_METHODS, "none"]
"""Client authentication at the token and revocation endpoints (RFC 6749 §2.3.1; ``none``: public clients)."""
_CODES = AuthorizationCode.__table__  # type: ignore[attr-defined]
_LOGINS = LoginSession.__table__  # type: ignore[attr-defined]
_CODE = (
    core_select(_CODES, and_(_LOGINS.c.id.is_not(None), _LOGINS.c.ended_at.is_(None)).label("login_live"))
    .select_from(_CODES.outerjoin(_LOGINS, _LOGINS.c.id == _CODES.c.session_id))
    .where(_CODES.c.code_sha256 == bindparam("digest"))
)
"""The code, and whether the login session it was issued in still lives (not ended; not pruned)."""
_CODE_FAMILY = core_select(_CODES.c.family_id).where(_CODES.c.code_sha256 == bindparam("digest"))
_CLAIM_CODE = (
    update(_CODES)
    .where(_CODES.c.code_sha256 == bindparam("digest"), _CODES.c.used_at.is_(None))
    .values(used_at=bindparam("now"), family_id=bindparam("family"))
)
"""Marks the code used and names the family this exchange will open (inserted later in the same transaction)."""
_INSERT_CODE = insert(_CODES)
_NONCE_USED = (
    core_select(_CODES.c.code_sha256)
    .where(_CODES.c.client_id == bindparam("client_id"), _CODES.c.nonce == bindparam("nonce"))
    .limit(1)
)


def _compare_s256(verifier: str, challenge: str) -> bool:
    return hmac.compare_digest(str(create_s256_code_challenge(verifier)).encode(), challenge.encode())


class EntenteCodeChallenge(CodeChallenge):  # type: ignore[misc]
    """RFC 7636 PKCE, S256 only; required of public clients at the authorization endpoint already."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": _compare_s256}

    def validate_code_challenge(self, grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
        super().validate_code_challenge(grant, redirect_uri)
        data = grant.request.payload.data
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256; plain is not accepted")
        client: RegisteredClient = grant.request.client
        if client.public and not data.get("code_challenge"):
            raise InvalidRequestError("a public client must send a PKCE code_challenge (S256)")


class AuthorizationRequestRules:
    """What Entente refuses in an authorization request beyond authlib's own checks.

    OIDC Core §6: request objects are not supported (``request_not_supported`` /
    ``request_uri_not_supported``). Only ``response_mode=query`` (RFC 9207 ``iss`` travels in the
    query). RFC 6749 §3.1: no parameter twice. ``max_age`` (OIDC Core §3.1.2.1) is a whole number of
    seconds. Raised after the redirect URI is validated, so each goes back to the client.
    """

    SINGLE = ("nonce", "prompt", "max_age", "response_mode", "code_challenge_method")

    def __call__(self, grant: AuthorizationCodeGrant) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.check)

    def check(self, grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
        payload = grant.request.payload
        if "request" in payload.data:
            raise RequestNotSupportedError()
        if "request_uri" in payload.data:
            raise RequestURINotSupportedError()
        for name in self.SINGLE:
            if len(payload.datalist.get(name, [])) > 1:
                raise InvalidRequestError(f"Multiple '{name}' in request.")
        if payload.data.get("response_mode") not in (None, "query"):
            raise InvalidRequestError("only response_mode=query is supported")
        max_age = payload.data.get("max_age")
        if max_age is not None and not (max_age.isdigit() and len(max_age) <= 10):
            raise InvalidRequestError("max_age must be a whole number of seconds")


@dataclass(frozen=True)
class CodeView:
    """An authorization code as authlib's grant and extensions read it."""

    code_sha256: str
    client_id: str
    partner_id: str
    subject_id: str
    session_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: dt.datetime
    family_id: str
    """The token family this exchange opens (already recorded on the code by the claim)."""
    login_live: bool = False
    """Whether the login session the code was issued in is still live (read with the code)."""

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


def _server(grant: Any) -> EntenteAuthorizationServer:
    return grant.server  # type: ignore[no-any-return]


class EntenteAuthorizationCodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """RFC 6749 §4.1 + OIDC Core §3.1 code flow over Entente's tables."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def save_authorization_code(self, code: str, request: EntenteRequest) -> None:
        server = _server(self)
        user: Principal = request.user
        data = request.payload.data
        server.session.connection().execute(
            _INSERT_CODE,
            {
                "code_sha256": sha256_hex(code),
                "client_id": request.client.client_id,
                "partner_id": user.partner_id,
                "subject_id": user.subject_id,
                "session_id": user.session_id,
                "redirect_uri": request.payload.redirect_uri,
                "scope": request.scope or "",
                "nonce": data.get("nonce"),
                "code_challenge": data.get("code_challenge"),
                "code_challenge_method": data.get("code_challenge_method"),
                "auth_time": user.auth_time,
                "expires_at": server.now + dt.timedelta(seconds=server.settings.oidc_code_seconds),
                "used_at": None,
                "family_id": None,
            },
        )

    def query_authorization_code(self, code: str, client: RegisteredClient) -> CodeView | None:
        """The unused, unexpired code of this client; a second use revokes its tokens and is refused."""
        server = _server(self)
        session = server.session
        connection = session.connection()
        row = connection.execute(_CODE, {"digest": sha256_hex(code)}).first() if len(code) <= 128 else None
        if row is None or not hmac.compare_digest(row.client_id.encode(), client.client_id.encode()):
            return None
        claimed = row.used_at is None and row.expires_at > server.now
        family_id = new_family_id()
        if claimed:
            result = connection.execute(
                _CLAIM_CODE, {"digest": row.code_sha256, "now": server.now, "family": family_id}
            )
            claimed = result.rowcount == 1
        if not claimed:
            if row.used_at is not None or row.expires_at > server.now:
                used_by = connection.execute(_CODE_FAMILY, {"digest": row.code_sha256}).scalar()  # as of now
                if used_by:
                    revoke_families(session, family_ids=[used_by], reason="code_reuse", now=server.now)
                    session.commit()
                raise InvalidGrantError("the authorization code was already used; its tokens are revoked")
            return None
        return CodeView(
            code_sha256=row.code_sha256,
            client_id=row.client_id,
            partner_id=row.partner_id,
            subject_id=row.subject_id,
            session_id=row.session_id,
            redirect_uri=row.redirect_uri,
            scope=row.scope,
            nonce=row.nonce,
            code_challenge=row.code_challenge,
            code_challenge_method=row.code_challenge_method,
            auth_time=row.auth_time,
            family_id=family_id,
            login_live=bool(row.login_live),
        )

    def delete_authorization_code(self, authorization_code: CodeView) -> None:
        """Kept (marked used) until it expires, so a replay is recognised."""

    def authenticate_user(self, authorization_code: CodeView) -> Principal:
        server = _server(self)
        principal = None
        if authorization_code.login_live:
            principal = admit(
                server.session,
                partner_id=authorization_code.partner_id,
                subject_id=authorization_code.subject_id,
                workspace_id=self.request.client.workspace_id,
                session_id=authorization_code.session_id,
                auth_time=authorization_code.auth_time,
                now=server.now,
            )
        if principal is None:
            raise InvalidGrantError("the person's session ended or their access to this workspace did")
        return principal


class EntenteOpenIDCode(OpenIDCode):  # type: ignore[misc]
    """OIDC Core §3.1.3.6 ID tokens: RS256 with the current key, ``sid`` for back-channel logout."""

    def __init__(self, server: EntenteAuthorizationServer) -> None:
        super().__init__(require_nonce=True)
        self.server = server

    def exists_nonce(self, nonce: str, request: EntenteRequest) -> bool:
        """A nonce this client already used in a code: a replayed authentication request."""
        key = (request.payload.client_id, nonce)
        if key not in self.server.used_nonces:
            found = self.server.session.connection().execute(_NONCE_USED, {"client_id": key[0], "nonce": nonce})
            self.server.used_nonces[key] = found.first() is not None
        return self.server.used_nonces[key]

    def generate_user_info(self, user: Principal, scope: str) -> UserInfo:
        return UserInfo({**identity_claims(user, scope), "sid": user.session_id})

    def resolve_client_private_key(self, client: RegisteredClient) -> RSAKey:
        return self.server.keys.signing

    def get_client_algorithm(self, client: RegisteredClient) -> str:
        return ALGORITHM

    def get_encode_header(self, client: RegisteredClient) -> dict[str, str]:
        return self.server.keys.header("JWT")

    def get_client_claims(self, client: RegisteredClient) -> dict[str, Any]:
        now = int(self.server.now.timestamp())
        return {
            "iss": self.server.issuer,
            "aud": client.client_id,
            "iat": now,
            "exp": now + self.server.settings.oidc_id_token_seconds,
        }


@dataclass(frozen=True)
class RefreshView:
    """A presented refresh token that may be exchanged (already marked rotated in this transaction)."""

    family_id: str
    client_id: str
    partner_id: str
    subject_id: str
    session_id: str
    scope: str
    created_at: dt.datetime
    expires_at: dt.datetime
    """The family's end: no refresh token of it outlives it."""
    login_created_at: dt.datetime | None = None
    """When the family's login session started (its ``auth_time``), if that session still exists."""
    admission: Any = None
    """The person's admission to the client's workspace, read with the token (``claims.admitted``)."""

    def check_client(self, client: RegisteredClient) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope


class EntenteRefreshTokenGrant(RefreshTokenGrant):  # type: ignore[misc]
    """RFC 6749 §6 with rotation; reuse of a rotated token revokes the family (RFC 9700 §4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def _revoke_and_refuse(self, family_id: str, reason: str, description: str) -> None:
        server = _server(self)
        revoke_families(server.session, family_ids=[family_id], reason=reason, now=server.now)
        server.session.commit()
        raise InvalidGrantError(description)

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshView | None:
        server = _server(self)
        client = self.request.client
        row, claimed = find_and_claim_refresh_token(
            server.session,
            token=refresh_token,
            client_id=client.client_id,
            workspace_id=client.workspace_id,
            now=server.now,
        )
        if row is None:
            return None
        if row.client_id != client.client_id or row.family_revoked_at is not None:
            return None
        if not claimed:  # rotated before, or by a concurrent request just now
            self._revoke_and_refuse(
                row.family_id, "refresh_reuse", "refresh token reuse detected: every token of this grant is revoked"
            )
        if row.expires_at <= server.now or row.family_expires_at <= server.now:
            return None
        return RefreshView(
            family_id=row.family_id,
            client_id=row.client_id,
            partner_id=row.partner_id,
            subject_id=row.subject_id,
            session_id=row.session_id,
            scope=row.scope,
            created_at=row.family_created_at,
            expires_at=row.family_expires_at,
            login_created_at=row.login_created_at,
            admission=row,
        )

    def authenticate_user(self, refresh_token: RefreshView) -> Principal:
        """The person, if still admitted to the client's workspace; else the family is revoked and refused.

        The login session may have expired (a refresh token outlives the browser session); one
        that was ended (logout, leave) has already revoked this family. A refresh issues no ID
        token, so the person is admitted as ``admit_without_facts`` would (same checks, no SCIM
        facts loaded), from the columns read with the token in the same transaction.
        """
        server = _server(self)
        principal = admitted(
            refresh_token.admission,
            partner_id=refresh_token.partner_id,
            subject_id=refresh_token.subject_id,
            session_id=refresh_token.session_id,
            auth_time=refresh_token.login_created_at or refresh_token.created_at,
            now=server.now,
        )
        if principal is None:
            self._revoke_and_refuse(
                refresh_token.family_id, "access_ended", "the person's access to this workspace has ended"
            )
        assert principal is not None
        return principal

    def revoke_old_credential(self, refresh_token: RefreshView) -> None:
        """Already marked rotated by ``authenticate_refresh_token`` (atomically, before issuing)."""
