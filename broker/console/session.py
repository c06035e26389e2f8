"""The console's browser state: one sealed cookie holding the CSRF token, the signed-in admin and a pending OIDC login.

Sealed with Fernet (``broker.workspaces.sealing``: AES-CBC + HMAC under ``ENTENTE_SECRET_KEY``), so
the browser can neither read nor change it; HttpOnly, SameSite=Lax, ``Secure`` when the public URL
is https, scoped to ``/console``. The cookie is only a claim: who the admin is and what they may
see is checked against the database on every request (``broker.console.auth``), so a removed
admin, an ended login session or a kill switch takes effect on the next click.

CSRF (OWASP "synchronizer token"): every form carries the cookie's random ``csrf`` value and
every POST must send it back; a cross-site form cannot read it.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from broker.errors import Forbidden
from broker.settings import Settings
from broker.workspaces.sealing import SealingError, open_sealed, seal

__all__ = ["COOKIE", "ConsoleState", "PendingLogin", "SignedIn", "check_csrf", "read_state", "write_state"]

COOKIE = "entente_console"
_PATH = "/console"


@dataclass(frozen=True)
class SignedIn:
    """Who signed in, as the cookie claims it (rechecked on every request)."""

    kind: Literal["local", "oidc"]
    name: str
    """The local username, or the person's userName."""
    partner_id: str | None = None
    subject_id: str | None = None
    sid: str | None = None
    """The Entente login session the OIDC sign-in came from: ending it signs the admin out."""


@dataclass(frozen=True)
class PendingLogin:
    """An OIDC authorization request in flight (RFC 6749 §10.12 state, OIDC nonce, RFC 7636 verifier)."""

    state: str
    nonce: str
    verifier: str
    next: str = "/console"


@dataclass(frozen=True)
class ConsoleState:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    user: SignedIn | None = None
    pending: PendingLogin | None = None
    expires: int = 0
    """Unix seconds after which ``user`` is no longer trusted."""

    def signed_in(self, user: SignedIn, *, minutes: int) -> ConsoleState:
        """A fresh CSRF token at sign-in (no fixation) and the admin, until ``minutes`` from now."""
        return ConsoleState(user=user, expires=int(time.time()) + minutes * 60)

    def signed_out(self) -> ConsoleState:
        return ConsoleState()

    def with_pending(self, pending: PendingLogin | None) -> ConsoleState:
        return replace(self, pending=pending)


def read_state(request: Request, settings: Settings) -> ConsoleState:
    """The cookie's state; a missing, tampered, foreign-key or expired cookie is a fresh anonymous state."""
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > 8192:
        return ConsoleState()
    try:
        data: dict[str, Any] = open_sealed(settings, raw)
        user = SignedIn(**data["user"]) if data.get("user") else None
        pending = PendingLogin(**data["pending"]) if data.get("pending") else None
        state = ConsoleState(csrf=str(data["csrf"]), user=user, pending=pending, expires=int(data.get("expires", 0)))
    except (SealingError, KeyError, TypeError, ValueError):
        return ConsoleState()
    if state.user is not None and state.expires < time.time():
        return ConsoleState(csrf=state.csrf, pending=state.pending)
    return state


def write_state(response: Response, state: ConsoleState, settings: Settings) -> None:
    response.set_cookie(
        COOKIE,
        seal(settings, asdict(state)),
        max_age=settings.console_session_minutes * 60,
        path=_PATH,
        httponly=True,
        samesite="lax",
        secure=settings.public_base_url.startswith("https://"),
    )


def check_csrf(state: ConsoleState, sent: str | None) -> None:
    """``Forbidden`` unless the form sent back this browser's CSRF token."""
    if not sent or not hmac.compare_digest(sent.encode(), state.csrf.encode()):
        raise Forbidden("the form was not sent from this console page (CSRF token missing or wrong); reload and retry")
