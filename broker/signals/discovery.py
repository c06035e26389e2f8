"""SSF 1.0 §7 transmitter metadata, served at ``/.well-known/ssf-configuration``.

The transmitter's issuer is the public base URL itself (no path), so its metadata sits at the
well-known path with nothing after it (SSF §7.2) and every SET's ``iss`` is that URL. SETs are
signed with the OIDC provider's keys, so ``jwks_uri`` is the provider's JWKS. Subjects are the
``iss_sub`` pairs of the provider's ID tokens, for every person a client saw (``default_subjects``
``ALL``), which is why there are no add/remove-subject endpoints.
"""

from __future__ import annotations

from typing import Any

from broker.provider.discovery import issuer_of
from broker.settings import Settings
from broker.signals.set import ssf_issuer
from broker.signals.streams import POLL, PUSH

__all__ = ["PATHS", "POLL_PATH", "poll_url", "transmitter_metadata"]

PATHS = {
    "configuration_endpoint": "/ssf/streams",
    "status_endpoint": "/ssf/status",
    "verification_endpoint": "/ssf/verify",
}
POLL_PATH = "/ssf/poll"
"""A poll stream's ``endpoint_url`` is ``{issuer}/ssf/poll/{stream_id}`` (RFC 8936 §2.4)."""


def poll_url(settings: Settings, stream_id: str) -> str:
    """Where the receiver of a poll stream polls: Entente's, so the receiver never supplies it."""
    return f"{ssf_issuer(settings)}{POLL_PATH}/{stream_id}"


def transmitter_metadata(settings: Settings) -> dict[str, Any]:
    issuer = ssf_issuer(settings)
    return {
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": f"{issuer_of(settings)}/jwks",
        "delivery_methods_supported": [PUSH, POLL],
        **{name: f"{issuer}{path}" for name, path in PATHS.items()},
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:7617"}],
        "default_subjects": "ALL",
    }
