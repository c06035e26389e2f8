"""Receiver authentication for the SSF endpoints: the OIDC client's own credentials (RFC 6749 §2.3.1).

SSF §8 asks for OAuth 2.0 protection; Entente's provider issues no client-credentials tokens, so a
receiver authenticates every management and poll request as it authenticates at the token
endpoint: HTTP Basic (RFC 7617) with its ``client_id`` and ``client_secret``, each form-urlencoded
first (RFC 6749 §2.3.1). The secret is compared in constant time against its stored SHA-256. A
public client has no secret and so cannot manage or poll streams. No request body is parsed
before the caller is known.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from sqlmodel import Session

from broker.provider.clients import RegisteredClient, find_client
from broker.signals.errors import AuthenticationFailed

__all__ = ["CHALLENGE", "authenticate_receiver"]

CHALLENGE = 'Basic realm="entente-ssf", charset="UTF-8"'
"""The ``WWW-Authenticate`` value of every 401 (RFC 7617 §2)."""


def _basic(header: str | None) -> tuple[str, str]:
    scheme, _, credential = (header or "").partition(" ")
    if scheme.lower() != "basic" or not credential.strip():
        raise AuthenticationFailed("authenticate with HTTP Basic: the client_id and client_secret")
    try:
        decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed("the Basic credentials are not base64 of UTF-8") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise AuthenticationFailed("the Basic credentials have no ':' between client_id and client_secret")
    return unquote_plus(client_id), unquote_plus(secret)


def authenticate_receiver(session: Session, *, authorization: str | None) -> RegisteredClient:
    """The confidential client the ``Authorization`` header proves, else ``AuthenticationFailed``.

    An unknown client, a wrong secret and a public client get the same answer, so the endpoint
    reveals no client ids.
    """
    client_id, secret = _basic(authorization)
    client = find_client(session, client_id=client_id)
    if client is None or client.public or not client.check_client_secret(secret):
        raise AuthenticationFailed("invalid client credentials")
    return client
