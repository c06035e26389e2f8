"""Downstream workspace connectors: one module per kind behind ``connectors.base.Connector``.

``REGISTRY`` is the only place a kind is named: one line per connector, no import strings.
"""

from connectors.base import ConnectorConfig
from connectors.scim import ScimConnectorConfig

__all__ = ["REGISTRY"]

REGISTRY: dict[str, type[ConnectorConfig]] = {
    "scim": ScimConnectorConfig,
}
