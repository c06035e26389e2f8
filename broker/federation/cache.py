"""Adapters built per IdP connection, cached by ``(connection id, config version)`` (after dex's
``connectors.Cache``), and the one-line-per-protocol registry that builds them.

An adapter keeps its IdP's discovery document and keys between logins, so the cache is what makes
a login cost one upstream round trip (the token request) instead of three. A connection whose
configuration changes gets a new ``version`` and therefore a fresh adapter; the old one is dropped.
Each process has its own cache (in ``app.state``): nothing in it is shared state.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from broker.federation.base import FederationError, IdPAdapter
from broker.federation.models import BindingKey, IdPConnection, IdPProtocol
from broker.federation.oidc import OIDCAdapter, OIDCConfig
from broker.federation.saml_metadata import parse_idp_metadata
from broker.settings import Settings
from broker.workspaces.sealing import open_sealed

__all__ = ["REGISTRY", "AdapterCache", "adapter_cache", "callback_url", "saml_entity_id"]

AdapterFactory = Callable[[IdPConnection, Settings, httpx.AsyncBaseTransport | None], IdPAdapter]


def callback_url(settings: Settings, connection_id: str) -> str:
    """The redirect URI a partner registers at its IdP for this connection."""
    return f"{settings.public_base_url.rstrip('/')}/login/callback/{quote(connection_id, safe='')}"


def saml_entity_id(settings: Settings, connection_id: str) -> str:
    """Entente's SAML SP entity ID for this connection: the URL of its SP metadata (one per connection)."""
    return f"{settings.public_base_url.rstrip('/')}/login/saml/{quote(connection_id, safe='')}/metadata"


def _open_oidc(connection: IdPConnection, settings: Settings, transport: httpx.AsyncBaseTransport | None) -> IdPAdapter:
    if not connection.issuer or not connection.client_id or not connection.client_secret_sealed:
        raise FederationError(f"IdP connection '{connection.id}' is incomplete (issuer, client id and secret)")
    secret = open_sealed(settings, connection.client_secret_sealed)["client_secret"]
    needed: tuple[str, ...] = ()  # externalId binding reads only the ID token's sub
    if connection.binding_key == BindingKey.USER_NAME:
        needed = (connection.username_claim,)
    elif connection.binding_key == BindingKey.EMAIL:
        needed = ("email",)
    if connection.jit and "email" not in needed:
        needed = (*needed, "email")  # a person is created only from a verified address
    config = OIDCConfig(
        connection_id=connection.id,
        tenant_id=connection.partner_id,
        issuer=connection.issuer,
        client_id=connection.client_id,
        client_secret=SecretStr(secret),
        redirect_uri=callback_url(settings, connection.id),
        timeout=settings.federation_http_timeout_seconds,
        metadata_ttl=settings.federation_metadata_ttl_seconds,
        leeway=settings.federation_clock_skew_seconds,
        max_age=settings.login_transaction_seconds,
        needed_claims=needed,
    )
    return OIDCAdapter(config, transport=transport)


def _open_saml(connection: IdPConnection, settings: Settings, transport: httpx.AsyncBaseTransport | None) -> IdPAdapter:
    """Fails closed: metadata without a usable signing certificate, or an entityID that is not the
    connection's, builds no adapter (``InvalidMetadata``)."""
    from broker.federation.saml import SAMLAdapter, SAMLConfig  # pysaml2 takes half a second to import

    if not connection.saml_metadata or not connection.issuer:
        raise FederationError(f"IdP connection '{connection.id}' is incomplete (SAML metadata and entity ID)")
    metadata = parse_idp_metadata(connection.saml_metadata)
    if metadata.entity_id != connection.issuer:
        raise FederationError(f"IdP connection '{connection.id}': its metadata names another entity ID")
    xmlsec = settings.saml_xmlsec_binary or shutil.which("xmlsec1")
    if xmlsec is None:
        raise FederationError("SAML sign-in is unavailable: xmlsec1 is not installed on this Entente server")
    config = SAMLConfig(
        connection_id=connection.id,
        tenant_id=connection.partner_id,
        metadata=metadata,
        sp_entity_id=saml_entity_id(settings, connection.id),
        acs_url=callback_url(settings, connection.id),
        email_verified=connection.saml_email_verified,
        xmlsec_binary=xmlsec,
        leeway=settings.federation_clock_skew_seconds,
        max_age=settings.login_transaction_seconds,
    )
    return SAMLAdapter(config)


REGISTRY: dict[str, AdapterFactory] = {
    IdPProtocol.OIDC.value: _open_oidc,
    IdPProtocol.SAML.value: _open_saml,
}
"""Protocol -> adapter factory; one line per protocol."""


class AdapterCache:
    """``(connection id, version) -> adapter`` for one process, with the connection each was built from."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport`` is given to every adapter built here (tests: an in-process or tampering transport)."""
        self._transport = transport
        self._adapters: dict[str, tuple[int, IdPConnection, IdPAdapter]] = {}
        """id -> (the version built for, as it was then; the connection; its adapter)."""
        self._retired: list[IdPAdapter] = []
        self._lock = threading.Lock()

    def connection(self, connection_id: str) -> IdPConnection | None:
        """The detached connection this process's adapter for ``connection_id`` was built from.

        It may be stale: whoever acts on a login it answers must confirm its version in the same
        transaction (``broker.federation.service.confirm_connection``).
        """
        with self._lock:
            cached = self._adapters.get(connection_id)
            return cached[1] if cached is not None else None

    def get(self, connection: IdPConnection, settings: Settings) -> IdPAdapter:
        """The connection's adapter at its current version, built on first use."""
        with self._lock:
            cached = self._adapters.get(connection.id)
            if cached is not None and cached[0] == connection.version:
                return cached[2]
        factory = REGISTRY.get(connection.protocol)
        if factory is None:
            raise FederationError(f"{connection.protocol.upper()} connections are not supported by this Entente yet")
        adapter = factory(connection, settings, self._transport)
        with self._lock:
            current = self._adapters.get(connection.id)
            if current is not None and current[0] > connection.version:
                self._retired.append(adapter)  # a slower reader's older row: serves its request, never cached
            else:
                self._adapters[connection.id] = (connection.version, connection, adapter)
                if current is not None and current[2] is not adapter:
                    self._retired.append(current[2])  # may be mid-login: closed at shutdown, not now
        return adapter

    async def aclose(self) -> None:
        """Close every adapter's pooled HTTP client (the app's shutdown)."""
        with self._lock:
            adapters = [adapter for _, _, adapter in self._adapters.values()] + self._retired
            self._adapters, self._retired = {}, []
        for adapter in adapters:
            close = getattr(adapter, "aclose", None)
            if close is not None:
                await close()


def adapter_cache(state: Any) -> AdapterCache:
    """The cache kept in an application's ``app.state``, made on first use."""
    cache = getattr(state, "idp_adapters", None)
    if cache is None:
        cache = AdapterCache()
        state.idp_adapters = cache
    return cache
