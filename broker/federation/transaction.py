"""The state of one login between Entente and the partner's IdP, kept in a sealed, short-lived cookie.

Why a cookie and not a server-side table: the login has not authenticated anybody yet, so a table
would let anyone fill it with abandoned logins; a cookie costs no write, works across every worker
and process (no sticky sessions), and binds the login to the browser that started it (RFC 6749
§10.12: a ``state`` that arrives without its cookie is a forged or replayed response). It is sealed
with Fernet (``broker.workspaces.sealing``: AES-CBC + HMAC), so the browser can neither read the
per-login secret (from which the PKCE verifier is derived) nor change the ``next`` path.

One cookie per login, named after a hash of its ``state`` and scoped to ``/login/callback/``, so two
logins in two tabs do not overwrite each other; it lives ``login_transaction_seconds`` and is deleted
by the callback, whatever its outcome (a used response cannot be replayed in the same browser).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from broker.errors import BrokerError
from broker.federation.base import FederationError, ReplayDetected
from broker.settings import Settings
from broker.workspaces.sealing import open_sealed, seal

__all__ = ["CALLBACK_PATH", "LoginTransaction", "UnsafeRedirect", "open_transaction", "safe_next", "secure_cookies"]

CALLBACK_PATH = "/login/callback/"
_COOKIE_PREFIX = "entente_login_"
MAX_NEXT = 2048


class UnsafeRedirect(FederationError):
    """A ``next`` that is not a path on this site (an open-redirect attempt, or a mistake)."""


def safe_next(value: str | None, *, default: str = "/login") -> str:
    """``value`` if it is a same-origin relative path (``/…``), else ``UnsafeRedirect``; ``None``/empty: default.

    Refused: absolute and scheme-relative URLs (``//evil``), backslashes (browsers read ``/\\evil`` as
    ``//evil``), control characters and whitespace, and anything longer than 2048 characters.
    """
    if not value:
        return default
    if (
        len(value) > MAX_NEXT
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value)
    ):
        raise UnsafeRedirect("after signing in, Entente only returns to a page of its own ('next' must be a path)")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        raise UnsafeRedirect("after signing in, Entente only returns to a page of its own ('next' must be a path)")
    return value


def secure_cookies(settings: Settings) -> bool:
    """Cookies get ``Secure`` when Entente is served over https."""
    return settings.public_base_url.lower().startswith("https://")


def _cookie_name(state: str) -> str:
    return _COOKIE_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LoginTransaction:
    """One login in progress."""

    state: str
    """RFC 6749 §4.1.1 ``state``: 256 random bits, sent through the browser."""
    secret: str
    """256 random bits that never leave Entente unsealed; the adapter's ``nonce`` argument."""
    connection_id: str
    next_path: str
    started_at: float

    @classmethod
    def start(cls, *, connection_id: str, next_path: str) -> LoginTransaction:
        return cls(
            state=secrets.token_urlsafe(32),
            secret=secrets.token_urlsafe(32),
            connection_id=connection_id,
            next_path=next_path,
            started_at=time.time(),
        )

    def set_cookie(self, response: Response, settings: Settings, *, cross_site_post: bool = False) -> None:
        """Attach the sealed transaction to the response that sends the browser to the IdP.

        ``cross_site_post``: the IdP answers with a cross-site POST (SAML HTTP-POST binding), with which
        browsers do not send ``SameSite=Lax`` cookies; the cookie is then ``SameSite=None``, which browsers
        accept only with ``Secure``, so only when Entente is served over https (over plain http, on a
        loopback address for development, it stays Lax and works while the IdP is on the same site).
        Still safe: a cross-site POST needs the ``state`` naming the cookie and an IdP-signed answer to the
        AuthnRequest ID derived from the sealed secret.
        """
        sealed = seal(
            settings,
            {
                "state": self.state,
                "secret": self.secret,
                "connection_id": self.connection_id,
                "next": self.next_path,
                "started_at": self.started_at,
            },
        )
        response.set_cookie(
            _cookie_name(self.state),
            sealed,
            max_age=settings.login_transaction_seconds,
            path=CALLBACK_PATH,
            secure=secure_cookies(settings),
            httponly=True,
            samesite="none" if cross_site_post and secure_cookies(settings) else "lax",
        )

    def clear_cookie(self, response: Response, settings: Settings) -> None:
        clear_cookie(response, settings, self.state)


def clear_cookie(response: Response, settings: Settings, state: str) -> None:
    """Delete the transaction cookie of ``state`` (if the browser has one)."""
    response.delete_cookie(
        _cookie_name(state), path=CALLBACK_PATH, secure=secure_cookies(settings), httponly=True, samesite="lax"
    )


def open_transaction(
    request: Request, settings: Settings, *, connection_id: str, state: str | None = None
) -> LoginTransaction:
    """The login this callback answers, or ``ReplayDetected``: no cookie for its ``state`` (used, expired,
    started in another browser, or forged), a cookie that does not open, or one of another connection.

    ``state`` is the query's ``state`` unless given (SAML: the posted ``RelayState``)."""
    state = (request.query_params.get("state") or "") if state is None else state
    sealed = request.cookies.get(_cookie_name(state)) if state else None
    if not sealed:
        raise ReplayDetected(
            "this sign-in response belongs to no sign-in in progress in this browser (already used, expired, "
            "or started elsewhere); please start again"
        )
    try:
        data = open_sealed(settings, sealed)
        transaction = LoginTransaction(
            state=str(data["state"]),
            secret=str(data["secret"]),
            connection_id=str(data["connection_id"]),
            next_path=str(data["next"]),
            started_at=float(data["started_at"]),
        )
    except (BrokerError, KeyError, TypeError, ValueError) as exc:
        raise ReplayDetected("the sign-in in progress cannot be read; please start again") from exc
    if transaction.connection_id != connection_id:
        raise ReplayDetected("this sign-in response arrived for another identity provider than the one used")
    if time.time() - transaction.started_at > settings.login_transaction_seconds:
        raise ReplayDetected("the sign-in took too long; please start again")
    return transaction
