"""Relying parties: registering a workspace's OIDC client, and the view authlib authenticates (RFC 6749 §2).

A confidential client authenticates with ``client_secret_basic`` or ``client_secret_post``
(RFC 6749 §2.3.1); only the secret's SHA-256 is stored and compared in constant time. A public
client (``--public``) has no secret and must use PKCE S256 (RFC 7636, RFC 9700 §2.1.1). Redirect
URIs are compared by exact string match (RFC 9700 §4.1.3) and must be https, or http on a
loopback host (RFC 8252 §7.3), with no fragment (RFC 6749 §3.1.2).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin, list_to_scope, scope_to_list
from sqlalchemy import bindparam
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.errors import Conflict, InvalidValue
from broker.provider.models import OAuthClient
from broker.workspaces.models import Workspace
from broker.workspaces.service import get_workspace

__all__ = [
    "CONFIDENTIAL_METHODS",
    "SUPPORTED_SCOPES",
    "AddedClient",
    "RegisteredClient",
    "add_client",
    "find_client",
    "list_clients",
    "sha256_hex",
]

SUPPORTED_SCOPES = ("openid", "profile", "email")
CONFIDENTIAL_METHODS = ("client_secret_basic", "client_secret_post")
GRANT_TYPES = ("authorization_code", "refresh_token")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_LOOPBACK_NAMES = {"localhost"}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RegisteredClient(ClientMixin):  # type: ignore[misc]
    """A client as authlib sees it: plain values, no ORM row (the request's session may be closed)."""

    client_id: str
    workspace_id: str
    secret_sha256: str | None
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    backchannel_logout_uri: str | None
    scopes: tuple[str, ...]
    client_metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    """What authlib's RP-initiated logout reads (``post_logout_redirect_uris``)."""

    @property
    def public(self) -> bool:
        return self.secret_sha256 is None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        """None: ``redirect_uri`` is required in every authorization request (OIDC Core §3.1.2.1)."""
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this client may have, in request order; the rest are dropped (RFC 6749 §3.3)."""
        if not scope:
            return ""
        return str(list_to_scope([s for s in scope_to_list(scope) if s in self.scopes]))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match against the registered URIs (RFC 9700 §4.1.3): no prefix, no normalising."""
        return any(hmac.compare_digest(redirect_uri.encode(), uri.encode()) for uri in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_sha256 is None:
            return False
        return hmac.compare_digest(sha256_hex(client_secret), self.secret_sha256)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """Public clients authenticate with ``none`` only; confidential ones with a secret only."""
        return method == "none" if self.public else method in CONFIDENTIAL_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES


def _view(row: OAuthClient) -> RegisteredClient:
    return RegisteredClient(
        client_id=row.client_id,
        workspace_id=row.workspace_id,
        secret_sha256=row.secret_sha256,
        redirect_uris=tuple(row.redirect_uris),
        post_logout_redirect_uris=tuple(row.post_logout_redirect_uris),
        backchannel_logout_uri=row.backchannel_logout_uri,
        scopes=tuple(row.scopes),
        client_metadata={"post_logout_redirect_uris": list(row.post_logout_redirect_uris)},
    )


_CLIENTS = OAuthClient.__table__  # type: ignore[attr-defined]
_FIND_CLIENT = sql_select(_CLIENTS).where(_CLIENTS.c.client_id == bindparam("client_id"))
"""Every token, authorization and revocation request looks its client up: a prebuilt Core statement."""


def find_client(session: Session, *, client_id: str | None) -> RegisteredClient | None:
    """The client with this id, or ``None`` (unknown or absent id)."""
    if not client_id or len(client_id) > 64:
        return None
    row = session.connection().execute(_FIND_CLIENT, {"client_id": client_id}).first()
    return _view(row) if row is not None else None  # type: ignore[arg-type]  # a Core row has the same columns


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_uri(uri: str, *, what: str) -> str:
    """An absolute https URL (http on loopback only) without fragment, else ``InvalidValue`` naming it."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise InvalidValue(f"{what} {uri!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidValue(f"{what} {uri!r} must be an absolute https URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise InvalidValue(f"{what} {uri!r} must use https (http only on a loopback address)")
    if parts.fragment or uri.endswith("#"):
        raise InvalidValue(f"{what} {uri!r} must not have a fragment")
    if len(uri) > 2000:
        raise InvalidValue(f"{what} is longer than 2000 characters")
    return uri


@dataclass(frozen=True)
class AddedClient:
    """The new client and its secret, shown once (``None`` for a public client)."""

    client: OAuthClient
    secret: str | None


def add_client(
    session: Session,
    *,
    slug: str,
    workspace_slug: str,
    redirect_uris: Sequence[str],
    backchannel_logout_uri: str | None = None,
    post_logout_redirect_uris: Sequence[str] = (),
    scopes: Sequence[str] | None = None,
    public: bool = False,
    actor: Actor,
) -> AddedClient:
    """Register ``slug`` (also its client_id) for a workspace; validates every URI; audited; commits."""
    if not _SLUG.match(slug):
        raise InvalidValue(f"client id {slug!r} must be lower-case letters, digits and dashes")
    if session.get(OAuthClient, slug) is not None:
        raise Conflict(f"client {slug!r} already exists")
    workspace = get_workspace(session, slug=workspace_slug)
    if not redirect_uris:
        raise InvalidValue("at least one --redirect-uri is required")
    uris = [check_uri(u, what="redirect URI") for u in dict.fromkeys(redirect_uris)]
    logout_uris = [check_uri(u, what="post-logout redirect URI") for u in dict.fromkeys(post_logout_redirect_uris)]
    backchannel = check_uri(backchannel_logout_uri, what="back-channel logout URI") if backchannel_logout_uri else None
    chosen = list(dict.fromkeys(scopes or SUPPORTED_SCOPES))
    unknown = [s for s in chosen if s not in SUPPORTED_SCOPES]
    if unknown or "openid" not in chosen:
        raise InvalidValue(f"scopes must include openid and be among {', '.join(SUPPORTED_SCOPES)}")
    secret = None if public else f"ent_oidc_{secrets.token_urlsafe(32)}"
    row = OAuthClient(
        client_id=slug,
        workspace_id=workspace.id,
        secret_sha256=sha256_hex(secret) if secret else None,
        redirect_uris=uris,
        post_logout_redirect_uris=logout_uris,
        backchannel_logout_uri=backchannel,
        scopes=chosen,
    )
    session.add(row)
    append_audit(
        session,
        actor=actor,
        action="oidc_client.added",
        partner_id=None,
        resource_type="OAuthClient",
        resource_id=slug,
        after={
            "workspace": workspace.slug,
            "public": public,
            "redirect_uris": uris,
            "post_logout_redirect_uris": logout_uris,
            "backchannel_logout_uri": backchannel,
            "scopes": chosen,
        },
    )
    session.commit()
    return AddedClient(client=row, secret=secret)


def list_clients(session: Session) -> list[tuple[OAuthClient, Workspace]]:
    """Every client with its workspace, by client id."""
    rows = session.exec(
        select(OAuthClient, Workspace)
        .join(Workspace, col(Workspace.id) == col(OAuthClient.workspace_id))
        .order_by(col(OAuthClient.client_id))
    ).all()
    return [(client, workspace) for client, workspace in rows]
