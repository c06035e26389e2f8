"""Downstream workspace connectors: one module per kind behind ``connectors.base.Connector``.

``REGISTRY`` is the only place a kind is named: one line per connector, no import strings.
"""

from connectors.base import ConnectorConfig
from connectors.github import GitHubConnectorConfig
from connectors.matrix import MatrixConnectorConfig
from connectors.scim import ScimConnectorConfig
from connectors.slack import SlackConnectorConfig
from connectors.webhook import WebhookConnectorConfig

__all__ = ["REGISTRY"]

REGISTRY: dict[str, type[ConnectorConfig]] = {
    "scim": ScimConnectorConfig,
    "matrix": MatrixConnectorConfig,
    "webhook": WebhookConnectorConfig,
    "slack": SlackConnectorConfig,
    "github": GitHubConnectorConfig,
}
