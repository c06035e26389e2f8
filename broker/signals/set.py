"""RFC 8417 Security Event Tokens as SSF 1.0 §4 profiles them, with RFC 9493 subject identifiers.

A SET is a JWT with ``typ: secevent+jwt`` (SSF §4.1.1) carrying ``iss``, ``aud``, ``iat``, ``jti``,
``txn`` and exactly one event under ``events``, whose subject is the top-level ``sub_id``
(SSF §4.1.2). It carries neither ``sub`` nor ``exp`` (SSF §4.1.8, §4.1.9): the ``typ`` and those
absences are what keep a SET from being mistaken for an ID, access or logout token signed by the
same key.
"""

from __future__ import annotations

from typing import Any

from joserfc import jwt

from broker.provider.discovery import issuer_of
from broker.provider.keys import ALGORITHM, KeyRing
from broker.settings import Settings
from broker.signals.models import SecurityEvent

__all__ = [
    "ACCOUNT_DISABLED",
    "EVENTS_SUPPORTED",
    "SESSION_REVOKED",
    "SET_MEDIA_TYPE",
    "SET_TYPE",
    "VERIFICATION",
    "encode_set",
    "signed_set",
    "ssf_issuer",
    "subject_identifier",
]

SET_TYPE = "secevent+jwt"
"""The JOSE ``typ`` (RFC 8417 §2.3, required by SSF §4.1.1)."""
SET_MEDIA_TYPE = "application/secevent+jwt"
"""The ``Content-Type`` of a pushed SET (RFC 8935 §2)."""
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
"""CAEP 1.0 §3.1: the subject's sessions were revoked; the receiver ends its own."""
ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
"""RISC 1.0 §2.2: the account was disabled at the transmitter."""
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
"""SSF §8.1.4.1: sent on request, whatever ``events_requested`` says, to prove the stream works."""
EVENTS_SUPPORTED = (SESSION_REVOKED, ACCOUNT_DISABLED)
"""What a stream may request (``events_supported``)."""


def ssf_issuer(settings: Settings) -> str:
    """The transmitter's issuer (SSF §7.1 ``issuer``, every SET's ``iss``): the public base URL, no path."""
    return settings.public_base_url.rstrip("/")


def subject_identifier(subject_format: str, subject: str, *, issuer: str) -> dict[str, str]:
    """The RFC 9493 ``sub_id``: ``iss_sub`` (§3.2.5, ``issuer`` is the OIDC issuer) or ``opaque`` (§3.2.4)."""
    if subject_format == "iss_sub":
        return {"format": "iss_sub", "iss": issuer, "sub": subject}
    if subject_format == "opaque":
        return {"format": "opaque", "id": subject}
    raise ValueError(f"unknown subject identifier format {subject_format!r}")


def encode_set(
    keys: KeyRing,
    *,
    issuer: str,
    audience: str,
    jti: str,
    iat: int,
    txn: str,
    sub_id: dict[str, str],
    event_type: str,
    event: dict[str, Any],
) -> str:
    """Sign one SET with the provider's current key; the same arguments always say the same thing."""
    claims = {
        "iss": issuer,
        "aud": audience,
        "iat": iat,
        "jti": jti,
        "txn": txn,
        "sub_id": sub_id,
        "events": {event_type: event},
    }
    return jwt.encode(keys.header(SET_TYPE), claims, keys.signing, algorithms=[ALGORITHM])


def signed_set(row: SecurityEvent, *, settings: Settings, keys: KeyRing, audience: str) -> str:
    """The SET a queued row stands for, signed now; every signing of a row carries the same claims.

    ``iss`` is the transmitter (the public base URL), the ``iss_sub``
    subject's ``iss`` the OIDC issuer whose ID tokens carried the ``sub``; ``iat`` is when the row
    was queued.
    """
    return encode_set(
        keys,
        issuer=ssf_issuer(settings),
        audience=audience,
        jti=row.jti,
        iat=int(row.queued_at.timestamp()),
        txn=row.txn,
        sub_id=subject_identifier(row.subject_format, row.subject, issuer=issuer_of(settings)),
        event_type=row.event_type,
        event=dict(row.event),
    )
