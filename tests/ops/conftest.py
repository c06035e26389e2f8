"""Operations fixtures: the federated-login ones, so a real login can move the login counter."""

from tests.federation.conftest import browser, federate  # noqa: F401  (fixtures used by test_metrics)
from tests.peers.oidc_provider_process import oidc_provider  # noqa: F401  (the session fixture federate needs)
