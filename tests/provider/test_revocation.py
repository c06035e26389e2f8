"""RFC 7009 token revocation."""

from __future__ import annotations

from tests.provider.conftest import World


def test_revoking_an_access_token_leaves_the_refresh_token(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    response = rp.revoke(tokens["access_token"], token_type_hint="access_token")
    assert response.status_code == 200 and response.json() == {}
    assert rp.introspect(tokens["access_token"]) == {"active": False}
    userinfo = world.browser.get("/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401
    assert rp.refresh(tokens["refresh_token"]).status_code == 200


def test_revoking_a_refresh_token_revokes_its_grant(world: World) -> None:
    """§2.1: the access tokens of the same grant go too."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    assert rp.revoke(tokens["refresh_token"]).status_code == 200  # no hint: found anyway
    assert rp.introspect(tokens["access_token"]) == {"active": False}
    assert rp.introspect(tokens["refresh_token"]) == {"active": False}
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_unknown_tokens_answer_200(world: World) -> None:
    """§2.2: invalid tokens do not cause an error response."""
    rp = world.client()
    assert rp.revoke("ent_rt_unknown").status_code == 200
    assert rp.revoke("a.b.c").status_code == 200


def test_public_client_revokes_with_its_client_id(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(public=True)
    tokens = rp.login_flow()
    assert rp.revoke(tokens["refresh_token"]).status_code == 200
    assert rp.refresh(tokens["refresh_token"]).status_code == 400


def test_a_client_cannot_revoke_another_clients_token(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp, other = world.client(), world.client()
    tokens = rp.login_flow()
    response = other.revoke(tokens["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert rp.refresh(tokens["refresh_token"]).status_code == 200


def test_revocation_needs_client_authentication(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    response = world.browser.post("/oidc/revoke", data={"token": tokens["access_token"]})
    assert response.status_code in (400, 401) and response.json()["error"] == "invalid_client"
    assert rp.introspect(tokens["access_token"])["active"] is True
    bad_hint = rp.revoke(tokens["access_token"], token_type_hint="id_token")
    assert bad_hint.status_code == 400 and bad_hint.json()["error"] == "unsupported_token_type"
