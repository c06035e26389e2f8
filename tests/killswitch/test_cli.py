"""`entente kill …` as an operator types it: confirmation, summary, list, lift, one-line errors."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from broker.audit.log import AuditRecord
from broker.cli import app
from broker.lifecycle.suspensions import live_suspensions
from broker.settings import Settings
from tests.cli_runner import Cli
from tests.conftest import PATCH_SCHEMA, PartnerHandle
from tests.lifecycle.helpers import apply_policy, grants_of, new_workspace, run_engine


def test_kill_person_then_lift_from_the_command_line(
    engine: Engine, settings: Settings, database_url: str, partner: PartnerHandle
) -> None:
    cli = Cli(database_url, in_process=True)
    ws = new_workspace(engine, settings)
    apply_policy(
        engine,
        f"""
- id: {partner.slug}-eng
  tenant: {partner.slug}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {ws.slug}, role: member }}]
""",
        partner_ids=[partner.id],
    )
    alice = partner.create_user("alice")
    group = partner.create_group("eng", members=[alice["id"]])
    assert group["members"]
    run_engine(engine)
    assert set(grants_of(engine, alice["id"])) == {ws.id}

    refused = CliRunner().invoke(
        app, ["kill", "person", partner.slug, partner.email("alice"), "--reason", "test"], input="n\n",
        env={"ENTENTE_DATABASE_URL": database_url},
    )  # fmt: skip
    assert refused.exit_code == 1 and "in every workspace? [y/N]" in refused.stdout
    assert "nothing changed" in refused.stdout
    assert set(grants_of(engine, alice["id"])) == {ws.id}

    done = cli.ok("kill", "person", partner.slug, partner.email("alice"), "--reason", "phished", "--yes")
    assert f"person {alice['id']} suspended" in done.stdout and "1 grants lost" in done.stdout
    assert f"lose  {ws.slug}" in done.stdout
    assert grants_of(engine, alice["id"]) == {}
    listed = cli.ok("kill", "list").stdout
    assert f"{partner.slug}\t{partner.email('alice')}\t" in listed and "\tphished\n" in listed

    cli.fails(
        "kill", "person", partner.slug, alice["id"], "--reason", "again", "--yes",
        message=f"person {partner.email('alice')} is already suspended",
    )  # fmt: skip
    cli.fails(
        "kill", "lift", partner.slug, "--reason", "x", "--yes", message=f"partner {partner.slug} is not suspended"
    )
    lifted = cli.ok("kill", "lift", partner.slug, alice["id"], "--reason", "cleared", "--yes")
    assert "lifted" in lifted.stdout and "1 grants restored" in lifted.stdout
    assert set(grants_of(engine, alice["id"])) == {ws.id}

    with Session(engine) as session:
        assert live_suspensions(session, partner_id=partner.id) == []
        actions = session.exec(
            select(AuditRecord.action, AuditRecord.actor_kind)
            .where(AuditRecord.partner_id == partner.id, col(AuditRecord.action).startswith("kill_switch"))
            .order_by(col(AuditRecord.id))
        ).all()
    assert [tuple(a) for a in actions] == [("kill_switch.engaged", "cli"), ("kill_switch.lifted", "cli")]


def test_kill_partner_from_the_command_line(database_url: str, partner: PartnerHandle) -> None:
    cli = Cli(database_url, in_process=True)
    bob = partner.create_user("bob")
    response = partner.client.patch(
        f"/Users/{bob['id']}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "title", "value": "x"}]},
    )
    assert response.status_code == 200
    done = cli.ok("kill", "partner", partner.slug, "--reason", "breach at the partner", "--yes")
    assert f"partner {partner.slug} suspended" in done.stdout and "1 person re-decided" in done.stdout
    assert f"{partner.slug}\t*\t" in cli.ok("kill", "list").stdout
    cli.fails("kill", "partner", "nobody-here", "--reason", "x", "--yes", message="no partner 'nobody-here'")
    assert "lifted" in cli.ok("kill", "lift", partner.slug, "--reason", "fixed", "--yes").stdout
