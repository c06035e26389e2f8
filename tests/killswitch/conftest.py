"""Kill-switch fixtures: the provider's world (partner people, login sessions, relying parties) on both databases."""

from tests.provider.conftest import browser, oidc_app, oidc_settings, world  # noqa: F401
