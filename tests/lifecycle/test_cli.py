"""`entente workspace`, `entente policy`, `entente outbox` and `entente demo` (the typer app in process, for speed;
tests/tenants/test_cli.py runs the console script as a subprocess)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from sqlmodel import Session, create_engine, select

from broker.lifecycle.outbox import DeliveryTask, TaskState
from broker.workspaces.models import Workspace
from tests.cli_runner import TOKEN_RE, Cli


def _slug(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_workspace_add_seals_the_secret_and_reports_status(cli_in_process: Cli) -> None:
    slug = _slug("ws-")
    added = cli_in_process.ok(
        "workspace", "add", slug, "--connector", "scim",
        "--set", "base_url=https://wiki.example/scim/v2", "--set", "token=s3cret-token-value",
        "--role-groups", "member=readers,writers", "--on-leave", "suspend",
    )  # fmt: skip
    assert added.stdout.startswith(f"workspace {slug} (scim) added")
    assert f"{slug}\tscim\tactive\ton-leave=suspend" in cli_in_process.ok("workspace", "list").stdout
    status = json.loads(cli_in_process.ok("workspace", "status", slug, "--json").stdout)
    assert status["config"]["token"] == "**********"
    assert (status["pending"], status["dead"], status["last_delivery_at"]) == (0, 0, None)
    with Session(create_engine(cli_in_process.url)) as session:
        row = session.exec(select(Workspace).where(Workspace.slug == slug)).one()
    assert "s3cret-token-value" not in row.config_sealed and "s3cret" not in json.dumps(row.config_public)
    assert row.role_groups == {"member": ["readers", "writers"]}


def test_workspace_add_refuses_bad_config_in_one_line(cli_in_process: Cli) -> None:
    cli_in_process.fails(
        "workspace", "add", _slug("ws-"), "--connector", "nosuch", "--set", "a=b",
        message="unknown connector 'nosuch'; known: github, matrix, scim, slack, webhook",
    )  # fmt: skip
    result = cli_in_process("workspace", "add", _slug("ws-"), "--connector", "scim", "--set", "base_url=not a url")
    assert result.code == 1 and result.stderr.startswith("error: scim connector: ")
    assert "token" in result.stderr or "base_url" in result.stderr


def test_policy_diff_changes_nothing_and_apply_grants(cli_in_process: Cli, tmp_path: Path) -> None:
    partner, workspace = _slug("p"), _slug("ws-")
    cli_in_process.ok("partner", "add", partner, "--name", "Diff Co", "--domain", f"{partner}.test")
    token = cli_in_process.ok("partner", "token", partner).lines[-1]
    assert TOKEN_RE.match(token)
    cli_in_process.ok("workspace", "add", workspace, "--connector", "scim", "--set", "base_url=http://127.0.0.1:9/v2",
           "--set", "token=t")  # fmt: skip
    policy = tmp_path / "rules.yaml"
    policy.write_text(
        f"- id: {partner}-all\n  tenant: {partner}\n  when: {{}}\n  grant: [{{workspace: {workspace}, role: member}}]\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"- id: x\n  tenant: {partner}\n  when: {{ grups_any: [eng] }}\n  grant: []\n")
    failed = cli_in_process("policy", "diff", str(bad))
    assert failed.code == 1 and "bad.yaml" in failed.stderr and "grups_any" in failed.stderr

    from fastapi.testclient import TestClient

    from broker.main import create_app
    from broker.settings import Settings
    from tests.conftest import SCIM_BASE, USER_SCHEMA

    settings = Settings(database_url=cli_in_process.url, public_base_url="http://testserver", delivery_worker=False)
    app = create_app(settings)
    with TestClient(app, base_url=SCIM_BASE) as api:
        body = {"schemas": [USER_SCHEMA], "userName": f"ann@{partner}.test"}
        created = api.post("/Users", json=body, headers={"Authorization": f"Bearer {token}"})
        assert created.status_code == 201, created.text
    app.state.engine.dispose()

    diff = json.loads(cli_in_process.ok("policy", "diff", "--json", str(policy)).stdout)
    mine = [c for c in diff if c["workspace"] == workspace]
    assert [(c["user_name"], c["change"], c["role_after"], c["rule_id"]) for c in mine] == [
        (f"ann@{partner}.test", "gain", "member", f"{partner}-all")
    ]
    assert json.loads(cli_in_process.ok("workspace", "status", workspace, "--json").stdout)["pending"] == 0  # dry run

    applied = cli_in_process.ok("policy", "apply", str(policy))
    assert f"ann@{partner}.test" in applied.stdout and "gain" in applied.stdout
    assert json.loads(cli_in_process.ok("workspace", "status", workspace, "--json").stdout)["pending"] == 1


def test_outbox_list_failed_and_retry(cli_in_process: Cli) -> None:
    workspace = _slug("ws-")
    cli_in_process.ok("workspace", "add", workspace, "--connector", "scim", "--set", "base_url=http://127.0.0.1:9/v2",
           "--set", "token=t")  # fmt: skip
    engine = create_engine(cli_in_process.url)
    with Session(engine) as session:
        ws = session.exec(select(Workspace).where(Workspace.slug == workspace)).one()
        task = DeliveryTask(
            workspace_id=ws.id, partner_id="p", subject_id="s-1", action="deprovision", cause="test",
            state=TaskState.DEAD.value, attempts=12, last_error="HTTP 400 no such user",
        )  # fmt: skip
        session.add(task)
        session.commit()
        task_id = task.id
    listed = cli_in_process.ok("outbox", "list", "--failed", "--workspace", workspace)
    assert f"{task_id}\t{workspace}\tdeprovision\tdead\tattempts=12" in listed.stdout
    assert "HTTP 400 no such user" in listed.stdout
    cli_in_process.fails("outbox", "retry", message="name dead task ids, or pass --all")
    assert cli_in_process.ok("outbox", "retry", str(task_id)).stdout == "1 dead task queued again\n"
    with Session(engine) as session:
        again = session.get(DeliveryTask, task_id)
        assert again is not None and (again.state, again.attempts) == ("pending", 0)
    engine.dispose()


def test_demo_sets_up_a_partner_a_workspace_and_a_policy(cli_in_process: Cli) -> None:
    first = cli_in_process.ok("demo", "--no-serve")
    assert TOKEN_RE.match(first.lines[-1])
    assert "Workspace 'demo-wiki'" in first.stdout
    assert "demo-wiki\tscim\tactive" in cli_in_process.ok("workspace", "list").stdout
    second = cli_in_process.ok("demo", "--no-serve")  # idempotent: a new token, nothing duplicated
    assert TOKEN_RE.match(second.lines[-1]) and second.lines[-1] != first.lines[-1]
    assert cli_in_process.ok("workspace", "list").stdout.count("demo-wiki\t") == 1
