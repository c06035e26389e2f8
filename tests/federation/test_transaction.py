"""The sealed login transaction and the ``next`` rule (no open redirect), without an IdP."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response

from broker.federation.base import ReplayDetected
from broker.federation.transaction import LoginTransaction, UnsafeRedirect, open_transaction, safe_next
from broker.settings import Settings


@pytest.mark.parametrize("value", ["/", "/login", "/a/b?c=d&e=%2F%2Fx", "/oauth2/authorize?client_id=x#frag"])
def test_same_site_paths_are_kept(value: str) -> None:
    assert safe_next(value) == value


@pytest.mark.parametrize(
    "value",
    ["https://evil.example", "//evil.example", "/\\evil.example", "\\/evil", "evil.example", "javascript:x",
     "/a b", "/a\tb", "/\x00", "/" + "a" * 2048, "http:/evil.example", "/%0a\n"],
)  # fmt: skip
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(UnsafeRedirect):
        safe_next(value)


def test_missing_next_goes_to_the_login_page() -> None:
    assert safe_next(None) == "/login" and safe_next("") == "/login"


def _callback(cookie_header: str, state: str, connection_id: str = "acme.oidc") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": f"/login/callback/{connection_id}",
            "query_string": f"state={state}&code=c".encode(),
            "headers": [(b"cookie", cookie_header.encode())],
        }
    )


def _started(settings: Settings, **overrides: object) -> tuple[LoginTransaction, str]:
    transaction = LoginTransaction.start(connection_id="acme.oidc", next_path="/next")
    if overrides:
        transaction = LoginTransaction(**{**transaction.__dict__, **overrides})
    response = Response()
    transaction.set_cookie(response, settings)
    name, _, rest = response.headers["set-cookie"].partition("=")
    return transaction, f"{name}={rest.split(';')[0]}"


def test_a_transaction_round_trips_sealed(settings: Settings) -> None:
    transaction, cookie = _started(settings)
    assert transaction.secret not in cookie and "/next" not in cookie
    assert open_transaction(_callback(cookie, transaction.state), settings, connection_id="acme.oidc") == transaction


def test_a_tampered_cookie_is_refused(settings: Settings) -> None:
    transaction, cookie = _started(settings)
    tampered = cookie[:-6] + ("AAAAAA" if not cookie.endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(ReplayDetected, match="cannot be read"):
        open_transaction(_callback(tampered, transaction.state), settings, connection_id="acme.oidc")


def test_an_expired_transaction_is_refused(settings: Settings) -> None:
    transaction, cookie = _started(settings, started_at=0.0)
    with pytest.raises(ReplayDetected, match="took too long"):
        open_transaction(_callback(cookie, transaction.state), settings, connection_id="acme.oidc")


def test_a_response_for_another_connection_is_refused(settings: Settings) -> None:
    """Mix-up defence: the login is bound to the connection it started with (its callback path)."""
    transaction, cookie = _started(settings)
    with pytest.raises(ReplayDetected, match="another identity provider"):
        open_transaction(_callback(cookie, transaction.state, "evil.oidc"), settings, connection_id="evil.oidc")
