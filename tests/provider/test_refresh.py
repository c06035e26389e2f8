"""Refresh tokens: RFC 6749 §6 with rotation and reuse detection (RFC 9700 §4.14.2)."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from sqlmodel import Session, col, select

from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.suspensions import Suspension
from broker.provider.models import TokenFamily
from broker.scim.models import ScimUser
from broker.tenants.models import Partner, PartnerStatus
from broker.types import utcnow
from tests.provider.conftest import World, query_of


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


def _lose_access(world: World, subject_id: str, how: str) -> None:
    """Change one thing under a live grant, directly in the database: the engine does not run, so
    only the check made at the request itself can refuse."""
    with Session(world.engine) as session:
        grant = session.exec(
            select(AccessGrant).where(
                AccessGrant.partner_id == world.partner.id,
                AccessGrant.subject_id == subject_id,
                AccessGrant.workspace_id == world.workspace.id,
            )
        ).one()
        if how == "inactive":
            user = session.exec(select(ScimUser).where(ScimUser.id == subject_id)).one()
            user.active = False
            session.add(user)
        elif how == "grant_expired":
            grant.until = utcnow() - dt.timedelta(seconds=1)
            session.add(grant)
        elif how == "grant_removed":
            session.delete(grant)
        elif how in ("person_killed", "partner_killed"):
            session.add(
                Suspension(
                    partner_id=world.partner.id,
                    subject_id=subject_id if how == "person_killed" else None,
                    reason="test",
                    suspended_by="cli:test",
                )
            )
        elif how == "partner_suspended":
            partner = session.get(Partner, world.partner.id)
            assert partner is not None
            partner.status = PartnerStatus.SUSPENDED
            session.add(partner)
        session.commit()


LOSSES = ["inactive", "grant_expired", "grant_removed", "person_killed", "partner_killed", "partner_suspended"]


@pytest.mark.parametrize("how", LOSSES)
def test_refresh_is_refused_and_the_family_ended_whatever_ended_the_access(world: World, how: str) -> None:
    alice, bob = world.person("alice"), world.person("bob")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    assert rp.refresh(tokens["refresh_token"]).status_code == 200  # the rotated token is now spent
    tokens = rp.login_flow()
    _lose_access(world, alice["id"], how)
    _invalid_grant(rp.refresh(tokens["refresh_token"]))
    with Session(world.engine) as session:
        families = session.exec(
            select(TokenFamily).where(TokenFamily.subject_id == alice["id"], col(TokenFamily.revoked_at).is_not(None))
        ).all()
        assert [f.revoke_reason for f in families] == ["access_ended"]
    assert rp.introspect(tokens["access_token"]) == {"active": False}
    if how in ("inactive", "grant_expired", "grant_removed", "person_killed"):  # bob, same partner, is untouched
        world.login(bob["id"])
        assert rp.refresh(rp.login_flow()["refresh_token"]).status_code == 200


@pytest.mark.parametrize("how", LOSSES)
def test_authorization_is_denied_whatever_ended_the_access(world: World, how: str) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    rp.login_flow()
    _lose_access(world, alice["id"], how)
    params = query_of(rp.authorize())
    assert params["error"] == "access_denied" and "code" not in params


def test_two_concurrent_uses_of_one_refresh_token_give_one_answer_and_end_the_family(world: World) -> None:
    """The claim is atomic (one UPDATE of a not-yet-rotated row): of two simultaneous presentations
    exactly one is exchanged, the other is a reuse, and the reuse ends the family (RFC 9700 §4.14.2)."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    token = rp.login_flow()["refresh_token"]
    start = threading.Barrier(2, timeout=10)

    def present() -> httpx2.Response:
        start.wait()
        return rp.refresh(token)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: present(), range(2)))
    assert sorted(answer.status_code for answer in answers) == [200, 400], [a.text for a in answers]
    winner = next(answer.json() for answer in answers if answer.status_code == 200)
    _invalid_grant(rp.refresh(winner["refresh_token"]))  # the family ended with the reuse
    with Session(world.engine) as session:
        families = session.exec(select(TokenFamily).where(TokenFamily.subject_id == alice["id"])).all()
        assert [f.revoke_reason for f in families] == ["refresh_reuse"]
