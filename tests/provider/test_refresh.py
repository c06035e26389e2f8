"""Refresh tokens: RFC 6749 §6 with rotation and reuse detection (RFC 9700 §4.14.2)."""

from __future__ import annotations

from sqlmodel import Session, select

from broker.provider.models import TokenFamily
from tests.provider.conftest import World


def _invalid_grant(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def test_each_refresh_rotates_the_refresh_token(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    first = rp.login_flow()
    second = rp.refresh(first["refresh_token"])
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"] and body["access_token"] != first["access_token"]
    third = rp.refresh(body["refresh_token"])
    assert third.status_code == 200
    assert rp.introspect(third.json()["access_token"])["active"] is True


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    first = rp.login_flow()
    rotated = rp.refresh(first["refresh_token"]).json()
    _invalid_grant(rp.refresh(first["refresh_token"]))  # the stolen, already-used token
    _invalid_grant(rp.refresh(rotated["refresh_token"]))  # ... takes the legitimate successor with it
    assert rp.introspect(rotated["access_token"]) == {"active": False}
    assert rp.introspect(first["access_token"]) == {"active": False}
    with Session(world.engine) as session:
        families = session.exec(select(TokenFamily).where(TokenFamily.subject_id == alice["id"])).all()
        assert [(f.revoke_reason is not None, f.revoke_reason) for f in families] == [(True, "refresh_reuse")]


def test_other_families_survive_a_reuse(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    kept, burnt = rp.login_flow(), rp.login_flow()
    rp.refresh(burnt["refresh_token"])
    _invalid_grant(rp.refresh(burnt["refresh_token"]))
    assert rp.refresh(kept["refresh_token"]).status_code == 200


def test_refresh_token_of_another_client_is_refused(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp, other = world.client(), world.client()
    tokens = rp.login_flow()
    _invalid_grant(other.refresh(tokens["refresh_token"]))
    assert rp.refresh(tokens["refresh_token"]).status_code == 200  # the wrong client burnt nothing


def test_public_client_refreshes_with_its_client_id(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(public=True)
    tokens = rp.login_flow()
    assert rp.refresh(tokens["refresh_token"]).status_code == 200


def test_refresh_may_narrow_the_scope_but_not_widen_it(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow(scope="openid email")
    narrowed = rp.refresh(tokens["refresh_token"], scope="openid")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "openid"
    widened = rp.refresh(narrowed.json()["refresh_token"], scope="openid email profile")
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"


def test_unknown_or_malformed_refresh_tokens_are_invalid_grant(world: World) -> None:
    rp = world.client()
    _invalid_grant(rp.refresh("ent_rt_" + "A" * 43))
    _invalid_grant(rp.refresh("not-one-of-ours"))
    missing = rp.token({"grant_type": "refresh_token"})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_refresh_fails_once_the_workspace_is_no_longer_granted(world: World) -> None:
    """A mover who leaves the group: the grant goes, the next refresh fails and ends the family."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    response = world.partner.client.patch(
        f"/Groups/{world.eng_group['id']}",
        json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
              "Operations": [{"op": "remove", "path": f'members[value eq "{alice["id"]}"]'}]},
    )  # fmt: skip
    assert response.status_code in (200, 204)
    world.regrant()
    assert rp.introspect(tokens["access_token"]) == {"active": False}
    _invalid_grant(rp.refresh(tokens["refresh_token"]))
    with Session(world.engine) as session:
        family = session.exec(select(TokenFamily).where(TokenFamily.subject_id == alice["id"])).one()
        assert family.revoke_reason == "access_ended"
