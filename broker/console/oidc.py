"""The console as a relying party of Entente's own OpenID Provider (OIDC Core §3.1, code flow + PKCE S256).

Partner people sign in to the console the way they sign in to any workspace: the console is a
workspace (``entente-console``) with a public client of the same name, registered on first use.
Who may sign in is decided by policy like everything else: a grant of role ``admin`` in
``entente-console`` makes a person the admin of their own partner (an operator if their partner is
``ENTENTE_CONSOLE_OPERATOR_PARTNER``). The provider refuses anyone without that grant, and a
leaver or a kill switch removes it, which signs them out of the console on their next click.

The workspace's connector is a Standard Webhook pointing at the console's own receiver
(``/console/hooks/accounts``): the console keeps no accounts (access is read from grants on each
request), so every event is verified and answered ``unchanged``.

The code is redeemed through the app's own ASGI interface (no network hop, same checks as any
relying party), and the ID token verified against the provider's published keys: signature,
``iss``, ``aud``, ``exp``, ``nonce`` (OIDC Core §3.1.3.7).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI
from joserfc import jwt
from joserfc.errors import JoseError
from sqlmodel import Session, select

from broker.audit.log import Actor
from broker.console.session import PendingLogin
from broker.errors import BadRequest, Conflict
from broker.provider.clients import RegisteredClient, add_client, find_client
from broker.provider.keys import key_ring
from broker.settings import Settings
from broker.workspaces.models import OnLeave, Workspace
from broker.workspaces.service import add_workspace, connector_config
from connectors.webhook import SECRET_PREFIX, sign, webhook_hmac_key

__all__ = [
    "CALLBACK_PATH",
    "CONSOLE_CLIENT",
    "CONSOLE_WORKSPACE",
    "HOOK_PATH",
    "ConsoleLoginError",
    "authorization_url",
    "ensure_console_client",
    "redeem",
    "verify_hook",
]

CONSOLE_WORKSPACE = "entente-console"
CONSOLE_CLIENT = "entente-console"
CALLBACK_PATH = "/console/callback"
HOOK_PATH = "/console/hooks/accounts"
_SYSTEM = Actor(kind="system", id="console")
_HOOK_TOLERANCE_SECONDS = 300


class ConsoleLoginError(BadRequest):
    """The provider's answer cannot be trusted (state, code exchange or ID token check failed)."""


def _base(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/")


def ensure_console_client(session: Session, *, settings: Settings) -> RegisteredClient:
    """The console's workspace and public client, made (and audited) the first time anyone needs them.

    Safe when two processes race: the loser's ``Conflict`` is answered by reading the winner's rows.
    Raises ``InvalidValue`` when the public URL is plain http on a non-loopback host (the provider
    accepts only https redirect URIs there): local admins can still sign in.
    """
    client = find_client(session, client_id=CONSOLE_CLIENT)
    if client is not None:
        return client
    if session.exec(select(Workspace.id).where(Workspace.slug == CONSOLE_WORKSPACE)).first() is None:
        secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
        try:
            add_workspace(
                session,
                settings=settings,
                slug=CONSOLE_WORKSPACE,
                name="Entente admin console",
                connector="webhook",
                values={"url": _base(settings) + HOOK_PATH, "secret": secret},
                on_leave=OnLeave.SUSPEND,
                actor=_SYSTEM,
            )
        except Conflict:
            session.rollback()
    try:
        add_client(
            session,
            slug=CONSOLE_CLIENT,
            workspace_slug=CONSOLE_WORKSPACE,
            redirect_uris=[_base(settings) + CALLBACK_PATH],
            post_logout_redirect_uris=[_base(settings) + "/console/login"],
            public=True,
            actor=_SYSTEM,
        )
    except Conflict:
        session.rollback()
    client = find_client(session, client_id=CONSOLE_CLIENT)
    assert client is not None
    return client


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorization_url(*, settings: Settings, next_path: str) -> tuple[PendingLogin, str]:
    """A new login's secrets (kept in the sealed cookie) and the provider URL the browser goes to."""
    pending = PendingLogin(
        state=secrets.token_urlsafe(24),
        nonce=secrets.token_urlsafe(24),
        verifier=secrets.token_urlsafe(48),
        next=next_path,
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CONSOLE_CLIENT,
            "redirect_uri": _base(settings) + CALLBACK_PATH,
            "scope": "openid profile",
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": _challenge(pending.verifier),
            "code_challenge_method": "S256",
        }
    )
    return pending, f"/oidc/authorize?{query}"


async def redeem(app: FastAPI, *, settings: Settings, pending: PendingLogin, code: str) -> dict[str, Any]:
    """Exchange the code at the token endpoint and return the verified ID token's claims."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=_base(settings), timeout=10) as http:
        response = await http.post(
            "/oidc/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": _base(settings) + CALLBACK_PATH,
                "client_id": CONSOLE_CLIENT,
                "code_verifier": pending.verifier,
            },
        )
    if response.status_code != 200:
        raise ConsoleLoginError(f"the provider refused the sign-in ({response.json().get('error', 'error')})")
    id_token = response.json().get("id_token")
    if not isinstance(id_token, str):
        raise ConsoleLoginError("the provider's answer carries no ID token")
    with Session(app.state.engine) as session:
        verifier = key_ring(session, settings=settings).verifier()
    try:
        decoded = jwt.decode(id_token, verifier, algorithms=["RS256"])
        jwt.JWTClaimsRegistry(
            leeway=settings.federation_clock_skew_seconds,
            iss={"essential": True, "value": _base(settings) + "/oidc"},
            aud={"essential": True, "value": CONSOLE_CLIENT},
            nonce={"essential": True, "value": pending.nonce},
            sub={"essential": True},
            sid={"essential": True},
            exp={"essential": True},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise ConsoleLoginError(f"the ID token failed verification: {exc}") from None
    return dict(decoded.claims)


def verify_hook(session: Session, *, settings: Settings, headers: dict[str, str], body: bytes) -> bool:
    """Whether a webhook POST carries a valid, fresh Standard Webhooks signature by the console workspace's secret."""
    workspace = session.exec(select(Workspace).where(Workspace.slug == CONSOLE_WORKSPACE)).first()
    if workspace is None:
        return False
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        return False
    if abs(time.time() - timestamp) > _HOOK_TOLERANCE_SECONDS:
        return False
    config = connector_config(settings, workspace)
    key = webhook_hmac_key(config.secret.get_secret_value())  # type: ignore[attr-defined]
    expected = sign(key=key, msg_id=headers.get("webhook-id", ""), timestamp=timestamp, body=body)
    sent = headers.get("webhook-signature", "").split()
    return any(secrets.compare_digest(s.encode(), expected.encode()) for s in sent)
