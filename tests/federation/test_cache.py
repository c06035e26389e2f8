"""Adapters are built per connection and cached by (connection id, config version)."""

from __future__ import annotations

import uuid

import pytest

from broker.federation.base import FederationError
from broker.federation.cache import AdapterCache
from broker.federation.models import IdPConnection
from broker.federation.oidc import OIDCAdapter
from broker.settings import Settings
from broker.workspaces.sealing import seal


def _connection(settings: Settings, **overrides: object) -> IdPConnection:
    values: dict[str, object] = {
        "id": f"p{uuid.uuid4().hex[:6]}.oidc",
        "partner_id": str(uuid.uuid4()),
        "protocol": "oidc",
        "name": "oidc",
        "issuer": "https://idp.example.com",
        "client_id": "client",
        "client_secret_sealed": seal(settings, {"client_secret": "sealed-secret"}),
    }
    values.update(overrides)
    return IdPConnection(**values)  # type: ignore[arg-type]


def test_same_version_same_adapter_new_version_new_adapter(settings: Settings) -> None:
    cache = AdapterCache()
    connection = _connection(settings)
    first = cache.get(connection, settings)
    assert isinstance(first, OIDCAdapter)
    assert cache.get(connection, settings) is first
    assert first.config.client_secret.get_secret_value() == "sealed-secret"
    assert first.config.redirect_uri == f"http://testserver/login/callback/{connection.id}"
    connection.version += 1
    connection.client_id = "rotated"
    second = cache.get(connection, settings)
    assert second is not first and second.config.client_id == "rotated"  # type: ignore[attr-defined]


def test_a_protocol_without_an_adapter_is_a_clear_refusal(settings: Settings) -> None:
    with pytest.raises(FederationError, match="WSFED connections are not supported"):
        AdapterCache().get(_connection(settings, protocol="wsfed"), settings)


def test_a_saml_connection_without_metadata_builds_no_adapter(settings: Settings) -> None:
    with pytest.raises(FederationError, match=r"is incomplete \(SAML metadata and entity ID\)"):
        AdapterCache().get(_connection(settings, protocol="saml"), settings)


def test_the_cache_hands_out_the_connection_its_adapter_was_built_from_and_never_an_older_one(
    settings: Settings,
) -> None:
    cache = AdapterCache()
    newer = _connection(settings, version=2)
    assert cache.connection(newer.id) is None  # nothing built yet: the callback reads the database
    built = cache.get(newer, settings)
    assert cache.connection(newer.id) is newer
    older = _connection(settings, id=newer.id, version=1, client_id="before-the-change")
    stale = cache.get(older, settings)  # a slower reader's row: it serves that request ...
    assert stale is not built and stale.config.client_id == "before-the-change"  # type: ignore[attr-defined]
    assert cache.connection(newer.id) is newer and cache.get(newer, settings) is built  # ... and is not cached
