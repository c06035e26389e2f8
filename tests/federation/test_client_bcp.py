"""RFC 9700 and OIDC Core §10.1.1 for Entente as a client of partner IdPs, where ``test_refusals.py`` had no
test yet: ``at_hash`` (access token injection), the IdP's key rotation mid-flow and a removed key, and the
login pages' own defences (open redirect at ``/logout``, clickjacking, ``Referer``).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from broker.federation.base import InvalidAssertion
from broker.federation.discovery import KeyCache
from broker.federation.idtoken import ALLOWED_ALGORITHMS, IdTokenCheck, validate_id_token
from tests.federation.browser import Browser, replace_query
from tests.federation.conftest import Federated, Tamper
from tests.federation.test_refusals import Audit, failure, refused

ISSUER = "https://idp.rotating.example"
JWKS_URI = f"{ISSUER}/jwks"


# --- RFC 9700 §4.6 access token injection: at_hash ----------------------------------------------------


def test_4_6_an_id_token_whose_at_hash_does_not_match_the_access_token_is_refused(
    fed: Federated, browser: Browser, tamper: Tamper, audit: Audit
) -> None:
    tamper.publish_key()
    tamper.token = lambda body: {**body, "id_token": tamper.resign(body["id_token"], at_hash="A" * 22)}
    refused(browser.login(fed.start, fed.sub), "does not match the access token")  # type: ignore[attr-defined]
    failure(audit, fed, "InvalidAssertion")


# --- OIDC Core §10.1.1: the partner IdP rotates its signing key ---------------------------------------


def test_the_idp_rotates_its_key_between_the_redirect_and_the_callback(
    fed: Federated, browser: Browser, tamper: Tamper, app: object
) -> None:
    """Entente cached the old key set; the IdP rotates while the person is at its login page; the
    callback's ID token names the new key: one refetch, and the login succeeds."""
    assert browser.login(fed.start, fed.sub).status_code == 303  # type: ignore[attr-defined]  # JWKS fetch 1
    second = Browser(app)  # type: ignore[arg-type]
    try:
        callback = second.sign_in_at_idp(second.to_idp(fed.start), fed.sub)  # type: ignore[attr-defined]
        tamper.key = RSAKey.generate_key(2048, parameters={"kid": "rotated-mid-flow", "use": "sig"})
        tamper.publish_key(from_fetch=2)
        tamper.token = lambda body: {**body, "id_token": tamper.resign(body["id_token"])}
        done = second.get(callback)
    finally:
        second.close()
    assert done.status_code == 303, done.text
    assert tamper.jwks_fetches == 2


def _jwks_transport(served: list[list[RSAKey]]) -> httpx.MockTransport:
    """The IdP's JWKS endpoint: the key set of the latest rotation step (``served[-1]``)."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URI
        return httpx.Response(200, json={"keys": [key.as_dict(private=False) for key in served[-1]]})

    return httpx.MockTransport(handler)


def _id_token(key: RSAKey, now: int) -> str:
    claims = {"iss": ISSUER, "aud": "entente", "sub": "kim", "iat": now, "exp": now + 300, "nonce": "n-1"}
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)


def _validate(token: str, keys: KeyCache, http: httpx.AsyncClient, now: int) -> dict[str, object]:
    check = IdTokenCheck(
        issuer=ISSUER, client_id="entente", nonce="n-1", algorithms=ALLOWED_ALGORITHMS, now=now, leeway=60, max_age=600
    )
    return asyncio.run(validate_id_token(token, check=check, keys=keys, http=http))


def test_a_token_signed_by_a_key_the_idp_removed_is_refused() -> None:
    """Rotation old -> old+new -> new: logins verify across the rotation, and once the IdP stops
    publishing the old key (and the cached set has aged out) a token it signed is refused."""
    old = RSAKey.generate_key(2048, parameters={"kid": "old", "use": "sig"})
    new = RSAKey.generate_key(2048, parameters={"kid": "new", "use": "sig"})
    served = [[old]]
    clock = [1000.0]
    keys = KeyCache(JWKS_URI, ttl=300, clock=lambda: clock[0])
    now = int(time.time())

    async def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=_jwks_transport(served))

    http = asyncio.run(client())
    assert _validate(_id_token(old, now), keys, http, now)["sub"] == "kim"  # login 1, fetch 1
    served.append([old, new])
    assert _validate(_id_token(new, now), keys, http, now)["sub"] == "kim"  # unknown kid: refetched once
    assert keys.fetches == 2
    served.append([new])
    clock[0] += 301  # the cached set is older than its TTL
    replayed = _id_token(old, now)
    with pytest.raises(InvalidAssertion, match="signed with key 'old', which the identity provider does not publish"):
        _validate(replayed, keys, http, now)
    assert _validate(_id_token(new, now), keys, http, now)["sub"] == "kim"
    asyncio.run(http.aclose())


# --- the login pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil.example"])
def test_4_11_1_logout_next_is_not_an_open_redirect(browser: Browser, target: str) -> None:
    response = browser.get(replace_query("/logout", next=target))
    refused(response, "only returns to a page of its own")
    assert "location" not in response.headers


@pytest.mark.parametrize(("path", "status"), [("/login", 200), ("/logout", 200), ("/login/no-such-partner", 404)])
def test_4_16_login_pages_cannot_be_framed_and_send_no_referrer(browser: Browser, path: str, status: int) -> None:
    response = browser.get(path)
    assert response.status_code == status and response.headers["content-type"].startswith("text/html")
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"


def test_4_2_the_redirect_to_the_idp_sends_no_referrer(fed: Federated, browser: Browser) -> None:
    response = browser.get(fed.start)
    assert response.status_code == 303 and response.headers["location"].startswith(fed.provider.issuer)
    assert response.headers["referrer-policy"] == "no-referrer" and response.headers["cache-control"] == "no-store"
