"""OpenID Connect Core 1.0 §3.1.3.7 ID Token Validation (and §3.1.3.8 ``at_hash``), with joserfc.

Every step the specification requires of a confidential client using the code flow, in its order:

1. An encrypted (JWE) ID token is refused: Entente registers no encryption key.
2. ``iss`` equals the IdP's issuer exactly.
3. ``aud`` contains our ``client_id``.
4. / 5. With several audiences ``azp`` is required; whenever present it equals our ``client_id``.
6. / 7. The JWS signature verifies with the IdP's published key named by ``kid`` (JWKS, refetched once
   on an unknown ``kid``), under an algorithm from the pinned allow-list. ``none`` and the HMAC
   algorithms are never accepted; ``jku``, ``x5u`` and embedded ``jwk`` headers are never followed.
9. ``exp`` is in the future, within the clock-skew leeway.
10. ``iat`` is not in the future and not older than the login may take (``max_age``), both with leeway.
11. ``nonce`` equals the one this login sent (compared in constant time).
Also: ``sub`` is a non-empty string of at most 255 ASCII characters (§2); ``nbf``, when present, is
passed; a ``typ`` header other than ``JWT`` is refused (no cross-JWT confusion with logout tokens or
access tokens); ``at_hash``, when present, matches the access token (§3.1.3.8).
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError

from broker.federation.base import InvalidAssertion, ReplayDetected
from broker.federation.discovery import KeyCache

__all__ = ["ALLOWED_ALGORITHMS", "IdTokenCheck", "validate_id_token"]

ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"})
"""Asymmetric algorithms only: an HMAC ID token would be keyed with the client secret (§10.1)."""
MAX_TOKEN_BYTES = 16 * 1024


@dataclass(frozen=True)
class IdTokenCheck:
    """What this login expects of its ID token."""

    issuer: str
    client_id: str
    nonce: str
    algorithms: frozenset[str]
    """The IdP's ``id_token_signing_alg_values_supported`` within ``ALLOWED_ALGORITHMS``."""
    now: int
    """Seconds since the epoch."""
    leeway: int
    max_age: int
    """Oldest acceptable ``iat``: ``now - max_age - leeway``."""
    access_token: str | None = None


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) == 5:
        raise InvalidAssertion("the ID token is encrypted (JWE); Entente accepts signed ID tokens only")
    if len(parts) != 3:
        raise InvalidAssertion("the ID token is not a JWS compact serialization")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidAssertion("the ID token header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise InvalidAssertion("the ID token header is not a JSON object")
    return header


def _check_header(header: dict[str, Any], algorithms: frozenset[str]) -> tuple[str, str | None]:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        accepted = ", ".join(sorted(algorithms)) or "none"
        raise InvalidAssertion(f"the ID token algorithm {alg!r} is not accepted (accepted: {accepted})")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ("jwt", "application/jwt")):
        raise InvalidAssertion(f"a token of type {typ!r} is not an ID token")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidAssertion("the ID token 'kid' header is not a string")
    return alg, kid


def _check_claims(claims: dict[str, Any], check: IdTokenCheck, alg: str) -> None:
    registry = jwt.JWTClaimsRegistry(
        now=check.now,
        leeway=check.leeway,
        iss={"essential": True, "value": check.issuer},
        sub={"essential": True},
        aud={"essential": True, "value": check.client_id},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError as exc:
        raise InvalidAssertion("the ID token has expired ('exp' is in the past)") from exc
    except MissingClaimError as exc:
        raise InvalidAssertion(f"the ID token lacks required claims: {exc.claim}") from exc
    except InvalidClaimError as exc:
        wrong = {
            "iss": f"the ID token was issued by {claims.get('iss')!r}, not by {check.issuer!r}",
            "aud": "the ID token is not meant for Entente ('aud' does not contain our client_id)",
            "iat": "the ID token was issued in the future ('iat')",
            "nbf": "the ID token is not valid yet ('nbf')",
        }
        raise InvalidAssertion(wrong.get(exc.claim, f"the ID token claim {exc.claim!r} is invalid")) from exc
    sub = claims["sub"]
    if not sub or len(sub) > 255 or not sub.isascii():
        raise InvalidAssertion("the ID token 'sub' must be 1 to 255 ASCII characters")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise InvalidAssertion("the ID token has several audiences and no 'azp'")
    if azp is not None and azp != check.client_id:
        raise InvalidAssertion("the ID token was issued to another client ('azp' is not our client_id)")
    if claims["iat"] < check.now - check.max_age - check.leeway:
        raise InvalidAssertion("the ID token is too old ('iat' precedes this login)")
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), check.nonce.encode()):
        raise ReplayDetected("the ID token's 'nonce' does not belong to this login (replayed or injected)")
    at_hash = claims.get("at_hash")
    if at_hash is not None and check.access_token is not None:
        expected = create_half_hash(check.access_token, alg)
        if expected is None or not isinstance(at_hash, str) or not hmac.compare_digest(at_hash.encode(), expected):
            raise InvalidAssertion("the ID token's 'at_hash' does not match the access token")


async def validate_id_token(
    token: str, *, check: IdTokenCheck, keys: KeyCache, http: httpx.AsyncClient
) -> dict[str, Any]:
    """The ID token's claims once every §3.1.3.7 check passed; else ``InvalidAssertion`` /
    ``ReplayDetected`` with a reason safe to show."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidAssertion("the ID token is too large")
    alg, kid = _check_header(_header(token), check.algorithms)
    key = await keys.key_for(http, kid)
    try:
        decoded = jwt.decode(token, key, algorithms=[alg])
    except BadSignatureError as exc:
        raise InvalidAssertion("the ID token signature does not verify with the identity provider's key") from exc
    except JoseError as exc:
        raise InvalidAssertion(f"the ID token cannot be verified ({exc.error})") from exc
    _check_claims(decoded.claims, check, alg)
    return decoded.claims
