"""The lifecycle engine: events + policies -> grants -> outbox tasks (issue 4, "Engine")."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.lifecycle.engine import expire_grants
from broker.lifecycle.grants import AccessGrant
from broker.settings import Settings
from broker.workspaces.models import OnLeave
from tests.conftest import PATCH_SCHEMA, MakePartner, PartnerHandle
from tests.lifecycle.helpers import apply_policy, grants_of, new_workspace, run_engine, tasks_of


def _policy(slug: str, workspace: str, *, group: str = "eng", role: str = "member", extra: str = "") -> str:
    return f"""
- id: {slug}-{workspace}
  tenant: {slug}
  when: {{ groups_any: [{group}] }}
  grant: [{{ workspace: {workspace}, role: {role} }}]
{extra}"""


def _deactivate(partner: PartnerHandle, user_id: str) -> None:
    body = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]}
    assert partner.client.patch(f"/Users/{user_id}", json=body).status_code == 200


def test_joiner_in_a_granted_group_is_provisioned_with_the_role_groups(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings, role_groups={"member": ["#chat", "#general"]})
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    alice = partner.create_user("alice", displayName="Alice A")
    partner.create_group("eng", members=[alice["id"]])
    run_engine(engine)

    assert grants_of(engine, alice["id"]) == {ws.id: ("member", f"{partner.slug}-{ws.slug}")}
    [(workspace_id, action, spec)] = tasks_of(engine, alice["id"])
    assert (workspace_id, action) == (ws.id, "update")
    assert spec is not None
    assert spec["user_name"] == partner.email("alice")
    assert spec["email"] == partner.email("alice")
    assert spec["display_name"] == "Alice A"
    assert spec["roles"] == ["member"] and spec["groups"] == ["#chat", "#general"]


def test_person_outside_every_rule_gets_nothing(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    bob = partner.create_user("bob")
    partner.create_group("sales", members=[bob["id"]])
    run_engine(engine)
    assert grants_of(engine, bob["id"]) == {}
    assert tasks_of(engine, bob["id"]) == []


def test_rule_for_one_partner_never_grants_another_partners_people(
    engine: Engine, settings: Settings, make_partner: MakePartner
) -> None:
    acme, other = make_partner(), make_partner()
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(acme.slug, ws.slug), partner_ids=[acme.id, other.id])
    stranger = other.create_user("eve")
    other.create_group("eng", members=[stranger["id"]])  # same group name, other partner
    run_engine(engine)
    assert grants_of(engine, stranger["id"]) == {}


def test_mover_who_leaves_the_group_loses_the_workspace(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    carol = partner.create_user("carol")
    group = partner.create_group("eng", members=[carol["id"]])
    run_engine(engine)
    body = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "remove", "path": f'members[value eq "{carol["id"]}"]'}],
    }
    assert partner.client.patch(f"/Groups/{group['id']}", json=body).status_code in (200, 204)
    run_engine(engine)
    assert grants_of(engine, carol["id"]) == {}
    assert [a for _, a, _ in tasks_of(engine, carol["id"])] == ["update", "revoke_sessions", "deprovision"]


def test_nested_group_membership_counts(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    dan = partner.create_user("dan")
    backend = partner.create_group("backend", members=[dan["id"]])
    partner.create_group("eng", members=[backend["id"]])
    run_engine(engine)
    assert ws.id in grants_of(engine, dan["id"])


def test_leaver_is_revoked_everywhere_per_workspace_setting(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    remove = new_workspace(engine, settings, on_leave=OnLeave.DEPROVISION)
    keep = new_workspace(engine, settings, on_leave=OnLeave.SUSPEND)
    text = _policy(partner.slug, remove.slug) + _policy(partner.slug, keep.slug)
    apply_policy(engine, text, partner_ids=[partner.id])
    erin = partner.create_user("erin")
    partner.create_group("eng", members=[erin["id"]])
    run_engine(engine)
    _deactivate(partner, erin["id"])
    run_engine(engine)

    assert grants_of(engine, erin["id"]) == {}
    actions = [(w, a) for w, a, _ in tasks_of(engine, erin["id"]) if a != "update"]
    assert sorted(actions) == sorted(
        [(remove.id, "revoke_sessions"), (remove.id, "deprovision"), (keep.id, "revoke_sessions"), (keep.id, "suspend")]
    )


def test_rejoiner_is_provisioned_again(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    fay = partner.create_user("fay")
    partner.create_group("eng", members=[fay["id"]])
    run_engine(engine)
    _deactivate(partner, fay["id"])
    run_engine(engine)
    body = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": True}]}
    assert partner.client.patch(f"/Users/{fay['id']}", json=body).status_code == 200
    run_engine(engine)
    assert [a for _, a, _ in tasks_of(engine, fay["id"])] == ["update", "revoke_sessions", "deprovision", "update"]
    assert ws.id in grants_of(engine, fay["id"])


def test_deleted_user_is_a_leaver(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    gus = partner.create_user("gus")
    partner.create_group("eng", members=[gus["id"]])
    run_engine(engine)
    assert partner.client.delete(f"/Users/{gus['id']}").status_code == 204
    run_engine(engine)
    assert grants_of(engine, gus["id"]) == {}
    assert [a for _, a, _ in tasks_of(engine, gus["id"])][-2:] == ["revoke_sessions", "deprovision"]


def test_replaying_the_engine_adds_nothing(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    hal = partner.create_user("hal")
    partner.create_group("eng", members=[hal["id"]])
    run_engine(engine)
    before = tasks_of(engine, hal["id"])
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])  # same policy again
    assert run_engine(engine) == 0
    assert tasks_of(engine, hal["id"]) == before


def test_profile_change_sends_an_update_only_when_the_spec_changes(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    ivy = partner.create_user("ivy", displayName="Ivy")
    partner.create_group("eng", members=[ivy["id"]])
    run_engine(engine)
    rename = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "displayName", "value": "Ivy B"}]}
    assert partner.client.patch(f"/Users/{ivy['id']}", json=rename).status_code == 200
    nick = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "nickName", "value": "iv"}]}
    assert partner.client.patch(f"/Users/{ivy['id']}", json=nick).status_code == 200
    run_engine(engine)
    updates = [spec for _, a, spec in tasks_of(engine, ivy["id"]) if a == "update"]
    assert [u["display_name"] for u in updates if u] == ["Ivy", "Ivy B"]


def test_role_change_by_policy_is_a_change_not_a_reprovision(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings, role_groups={"admin": ["#admins"]})
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    jo = partner.create_user("jo")
    partner.create_group("eng", members=[jo["id"]])
    run_engine(engine)
    apply_policy(engine, _policy(partner.slug, ws.slug, role="admin"), partner_ids=[partner.id])
    assert grants_of(engine, jo["id"])[ws.id][0] == "admin"
    updates = [spec for _, a, spec in tasks_of(engine, jo["id"]) if a == "update"]
    assert updates[-1] is not None and updates[-1]["roles"] == ["admin"] and updates[-1]["groups"] == ["#admins"]


def test_only_verified_domain_emails_reach_workspaces(
    engine: Engine, settings: Settings, make_partner: MakePartner
) -> None:
    from broker.tenants.models import DomainPolicy

    partner = make_partner(domain_policy=DomainPolicy.WARN)
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    kim = partner.create_user("kim", emails=[{"value": "kim@gmail.example", "primary": True}])
    partner.create_group("eng", members=[kim["id"]])
    run_engine(engine)
    [(_, _, spec)] = tasks_of(engine, kim["id"])
    assert spec is not None and spec["email"] == partner.email("kim")  # the userName, not the unverified address


def test_grant_past_its_end_date_expires_by_itself(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    ws = new_workspace(engine, settings)
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    apply_policy(engine, _policy(partner.slug, ws.slug, extra=f"  until: {soon}\n"), partner_ids=[partner.id])
    lea = partner.create_user("lea")
    partner.create_group("eng", members=[lea["id"]])
    run_engine(engine)
    assert ws.id in grants_of(engine, lea["id"])
    with Session(engine, expire_on_commit=False) as session:
        # expire_grants serves every partner: other tests' lapsed grants in this database are theirs
        ours = [c for c in expire_grants(session, now=dt.datetime.now(dt.UTC)) if c.partner_id == partner.id]
        assert ours == []  # not yet
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
        changes = [c for c in expire_grants(session, now=later) if c.partner_id == partner.id]
    assert [(c.subject_id, c.change) for c in changes] == [(lea["id"], "lose")]
    assert grants_of(engine, lea["id"]) == {}
    assert [a for _, a, _ in tasks_of(engine, lea["id"])] == ["update", "revoke_sessions", "deprovision"]


def test_every_grant_is_audited_with_its_rule(
    engine: Engine, settings: Settings, partner: PartnerHandle, audit
) -> None:  # type: ignore[no-untyped-def]
    ws = new_workspace(engine, settings)
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    max_ = partner.create_user("max")
    partner.create_group("eng", members=[max_["id"]])
    run_engine(engine)
    records = [r for r in audit(partner.id) if r.action.startswith("access.")]
    assert [(r.action, r.resource_id, r.detail["rule_id"], r.detail["workspace"]) for r in records] == [
        ("access.gain", max_["id"], f"{partner.slug}-{ws.slug}", ws.slug)
    ]
    with Session(engine) as session:
        assert session.exec(select(AccessGrant).where(AccessGrant.subject_id == max_["id"])).one().rule_id
