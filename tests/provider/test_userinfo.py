"""OIDC Core §5.3 UserInfo, with RFC 6750 bearer tokens (§2.1 header, §2.2 form body, §3 errors)."""

from __future__ import annotations

from tests.provider.conftest import World


def test_userinfo_returns_the_scoped_claims(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow(scope="openid email")
    response = world.browser.get("/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body == {
        "sub": alice["id"],
        "partner": world.partner.slug,
        "groups": ["eng"],
        "roles": ["member"],
        "email": world.partner.email("alice"),
        "email_verified": True,
    }
    posted = world.browser.post("/oidc/userinfo", data={"access_token": tokens["access_token"]})
    assert posted.status_code == 200 and posted.json() == body


def test_userinfo_refuses_missing_invalid_and_non_openid_tokens(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    missing = world.browser.get("/oidc/userinfo")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    invalid = world.browser.get("/oidc/userinfo", headers={"Authorization": "Bearer nope.nope.nope"})
    assert invalid.status_code == 401 and 'error="invalid_token"' in invalid.headers["www-authenticate"]
    refresh = rp.login_flow()["refresh_token"]
    as_refresh = world.browser.get("/oidc/userinfo", headers={"Authorization": f"Bearer {refresh}"})
    assert as_refresh.status_code == 401
    oauth_only = rp.login_flow(scope="profile", nonce=None)["access_token"]
    insufficient = world.browser.get("/oidc/userinfo", headers={"Authorization": f"Bearer {oauth_only}"})
    assert insufficient.status_code == 403 and insufficient.json()["error"] == "insufficient_scope"
