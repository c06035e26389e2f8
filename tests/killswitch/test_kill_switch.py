"""The kill switch (issue 6): a person or a whole partner suspended everywhere, audited, and lifted again."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session, col, select

from broker.audit.log import Actor, AuditRecord
from broker.errors import Conflict, InvalidValue, NotFound
from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.killswitch import lift_partner, lift_person, suspend_partner, suspend_person
from broker.lifecycle.outbox import DeliveryTask
from broker.lifecycle.suspensions import Suspension, live_suspensions
from broker.provider.models import LogoutNotification
from broker.sessions.models import LoginSession
from broker.workspaces.models import OnLeave, Workspace
from tests.conftest import PATCH_SCHEMA, MakePartner, PartnerHandle
from tests.lifecycle.helpers import apply_policy, grants_of, new_workspace, run_engine
from tests.provider.conftest import World

OPERATOR = Actor(kind="cli", id="kill-tests")


def _rules(partners: list[PartnerHandle], workspaces: list[Workspace]) -> str:
    """Each partner's ``eng`` group gets every workspace."""
    grants = ", ".join(f"{{ workspace: {w.slug}, role: member }}" for w in workspaces)
    return "".join(
        f"""
- id: {p.slug}-eng
  tenant: {p.slug}
  when: {{ groups_any: [eng] }}
  grant: [{grants}]
"""
        for p in partners
    )


def _kill_tasks(world: World, subject_id: str) -> list[tuple[str, str, str]]:
    """(workspace id, action, cause prefix) of the person's tasks the kill switch (or its lifting) queued."""
    with Session(world.engine) as session:
        rows = session.exec(
            select(DeliveryTask)
            .where(DeliveryTask.subject_id == subject_id, col(DeliveryTask.cause).startswith("kill_switch"))
            .order_by(col(DeliveryTask.id))
        ).all()
        return [(t.workspace_id, t.action, t.cause.split(":")[0]) for t in rows]


def _audit(world: World, action: str) -> list[AuditRecord]:
    with Session(world.engine) as session:
        return list(
            session.exec(
                select(AuditRecord)
                .where(AuditRecord.partner_id == world.partner.id, AuditRecord.action == action)
                .order_by(col(AuditRecord.id))
            ).all()
        )


@pytest.fixture
def two_workspaces(world: World) -> tuple[Workspace, Workspace]:
    """The world's workspace (deprovision on leave) and a second one that suspends on leave, both granted."""
    second = new_workspace(world.engine, world.settings, on_leave=OnLeave.SUSPEND)
    apply_policy(world.engine, _rules([world.partner], [world.workspace, second]), partner_ids=[world.partner.id])
    return world.workspace, second


def _member(world: World, local: str) -> dict[str, Any]:
    """A person in the partner's ``eng`` group, decided by the engine."""
    user = world.partner.create_user(local)
    response = world.partner.client.patch(
        f"/Groups/{world.eng_group['id']}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}],
        },
    )
    assert response.status_code in (200, 204), response.text
    run_engine(world.engine)
    return user


def test_killed_person_is_revoked_in_every_workspace_and_every_session_ends(
    world: World, two_workspaces: tuple[Workspace, Workspace]
) -> None:
    wiki, chat_ws = two_workspaces
    alice, bob = _member(world, "alice"), _member(world, "bob")
    assert set(grants_of(world.engine, alice["id"])) == {wiki.id, chat_ws.id}
    sid = world.login(alice["id"])
    chat = world.client(backchannel="http://127.0.0.1:9/bcl", workspace=chat_ws)
    tokens = chat.login_flow()

    with Session(world.engine, expire_on_commit=False) as session:
        outcome = suspend_person(
            session, partner_slug=world.partner.slug, person=world.partner.email("ALICE"), reason="laptop stolen",
            actor=OPERATOR,
        )  # fmt: skip
    assert outcome.subject_id == alice["id"] and outcome.people == 1
    assert sorted(c.change for c in outcome.changes) == ["lose", "lose"] and outcome.sessions == 2

    assert grants_of(world.engine, alice["id"]) == {}
    assert sorted(_kill_tasks(world, alice["id"])) == sorted(
        [
            (wiki.id, "revoke_sessions", "kill_switch"),
            (wiki.id, "deprovision", "kill_switch"),
            (chat_ws.id, "revoke_sessions", "kill_switch"),
            (chat_ws.id, "suspend", "kill_switch"),
        ]
    )
    with Session(world.engine) as session:
        login = session.get(LoginSession, sid)
        assert login is not None and login.end_reason == "kill_switch" and login.ended_at is not None
        told = session.exec(select(LogoutNotification).where(LogoutNotification.subject_id == alice["id"])).all()
        assert [(n.client_id, n.sid, n.reason) for n in told] == [(chat.client_id, sid, "kill_switch")]
    assert chat.introspect(tokens["access_token"]) == {"active": False}
    assert chat.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"

    [engaged] = _audit(world, "kill_switch.engaged")
    assert engaged.resource_id == alice["id"] and engaged.actor_id == "kill-tests"
    assert engaged.detail["reason"] == "laptop stolen" and engaged.detail["scope"] == "person"
    assert engaged.detail["grants_lost"] == 2
    revoked = [r for r in _audit(world, "oidc.sessions_revoked") if r.resource_id == alice["id"]]
    assert [r.detail["reason"] for r in revoked] == ["kill_switch"]
    # Bob, in the same partner and group, keeps everything and gets no task.
    assert set(grants_of(world.engine, bob["id"])) == {wiki.id, chat_ws.id}
    assert _kill_tasks(world, bob["id"]) == []


def test_suspension_holds_against_later_scim_changes_and_lifting_restores_per_policy(
    world: World, two_workspaces: tuple[Workspace, Workspace]
) -> None:
    wiki, chat_ws = two_workspaces
    alice = _member(world, "alice")
    with Session(world.engine) as session:
        suspend_person(session, partner_slug=world.partner.slug, person=alice["id"], reason="incident", actor=OPERATOR)
    # The partner's IdP keeps sending changes: they are recorded, and grant nothing while suspended.
    response = world.partner.client.patch(
        f"/Users/{alice['id']}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "displayName", "value": "A"}]},
    )
    assert response.status_code == 200
    assert run_engine(world.engine) >= 1
    assert grants_of(world.engine, alice["id"]) == {}

    with Session(world.engine, expire_on_commit=False) as session:
        lifted = lift_person(
            session, partner_slug=world.partner.slug, person=alice["id"], reason="laptop found", actor=OPERATOR
        )
    assert sorted(c.change for c in lifted.changes) == ["gain", "gain"]
    assert set(grants_of(world.engine, alice["id"])) == {wiki.id, chat_ws.id}
    assert sorted(t for t in _kill_tasks(world, alice["id"]) if t[2] == "kill_switch_lifted") == sorted(
        [(wiki.id, "update", "kill_switch_lifted"), (chat_ws.id, "update", "kill_switch_lifted")]
    )
    [record] = _audit(world, "kill_switch.lifted")
    assert record.detail["reason"] == "laptop found" and record.detail["grants_restored"] == 2
    with Session(world.engine) as session:
        [row] = session.exec(select(Suspension).where(Suspension.subject_id == alice["id"])).all()
        assert row.lifted_at is not None and row.lifted_by == "cli:kill-tests" and row.lift_reason == "laptop found"


def test_killed_partner_loses_all_its_people_and_no_other_partner_is_touched(
    world: World, make_partner: MakePartner
) -> None:
    other = make_partner()
    other_eng = other.create_group("eng")
    apply_policy(
        world.engine, _rules([world.partner, other], [world.workspace]), partner_ids=[world.partner.id, other.id]
    )
    alice, bob = _member(world, "alice"), _member(world, "bob")
    carol = other.create_user("carol")
    other.client.patch(
        f"/Groups/{other_eng['id']}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": carol["id"]}]}],
        },
    )
    run_engine(world.engine)
    assert grants_of(world.engine, carol["id"]) != {}
    world.login(bob["id"])
    with Session(world.engine) as session:
        suspend_person(session, partner_slug=world.partner.slug, person=bob["id"], reason="bob alone", actor=OPERATOR)

    with Session(world.engine, expire_on_commit=False) as session:
        outcome = suspend_partner(session, partner_slug=world.partner.slug, reason="contract ended", actor=OPERATOR)
    assert outcome.subject_id is None and outcome.people == 2
    assert grants_of(world.engine, alice["id"]) == {} and grants_of(world.engine, bob["id"]) == {}
    assert {a for _, a, _ in _kill_tasks(world, alice["id"])} == {"revoke_sessions", "deprovision"}
    # A joiner the partner's feed adds while it is suspended gets nothing either.
    dave = _member(world, "dave")
    assert grants_of(world.engine, dave["id"]) == {}
    # The other partner is untouched.
    assert grants_of(world.engine, carol["id"]) == {world.workspace.id: ("member", f"{other.slug}-eng")}
    assert _kill_tasks(world, carol["id"]) == []
    with Session(world.engine) as session:
        assert [s.subject_id for s in live_suspensions(session, partner_id=other.id)] == []

    # A leaver during the suspension stays out after lifting; bob's own suspension survives the lift.
    response = world.partner.client.patch(
        f"/Users/{alice['id']}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]},
    )
    assert response.status_code == 200
    run_engine(world.engine)
    with Session(world.engine, expire_on_commit=False) as session:
        lifted = lift_partner(session, partner_slug=world.partner.slug, reason="new contract", actor=OPERATOR)
    assert {c.subject_id for c in lifted.changes} == {dave["id"]}
    assert grants_of(world.engine, alice["id"]) == {} and grants_of(world.engine, bob["id"]) == {}
    assert set(grants_of(world.engine, dave["id"])) == {world.workspace.id}
    with Session(world.engine) as session:
        assert [s.subject_id for s in live_suspensions(session, partner_id=world.partner.id)] == [bob["id"]]
        engaged = session.exec(
            select(AuditRecord).where(
                AuditRecord.action == "kill_switch.engaged", AuditRecord.resource_type == "Partner",
                AuditRecord.resource_id == world.partner.id,
            )
        ).one()  # fmt: skip
        assert engaged.detail["reason"] == "contract ended" and engaged.detail["people"] == 2


def test_refusals_name_what_is_wrong_and_change_nothing(world: World, make_partner: MakePartner) -> None:
    alice = world.partner.create_user("alice")
    stranger = make_partner().create_user("eve")
    with Session(world.engine) as session:
        with pytest.raises(InvalidValue, match="reason is required"):
            suspend_person(session, partner_slug=world.partner.slug, person=alice["id"], reason="  ", actor=OPERATOR)
        session.rollback()
        with pytest.raises(NotFound, match="no person"):  # another partner's person is not found here
            suspend_person(session, partner_slug=world.partner.slug, person=stranger["id"], reason="x", actor=OPERATOR)
        session.rollback()
        with pytest.raises(NotFound, match="no partner"):
            suspend_partner(session, partner_slug="no-such-partner", reason="x", actor=OPERATOR)
        session.rollback()
        with pytest.raises(NotFound, match="not suspended"):
            lift_person(session, partner_slug=world.partner.slug, person=alice["id"], reason="x", actor=OPERATOR)
        session.rollback()
        suspend_person(session, partner_slug=world.partner.slug, person=alice["id"], reason="once", actor=OPERATOR)
        with pytest.raises(Conflict, match="already suspended"):
            suspend_person(session, partner_slug=world.partner.slug, person=alice["id"], reason="twice", actor=OPERATOR)
        session.rollback()
        assert len(live_suspensions(session, partner_id=world.partner.id)) == 1
        assert session.exec(select(AccessGrant).where(AccessGrant.subject_id == alice["id"])).all() == []
