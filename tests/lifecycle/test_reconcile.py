"""Reconciliation against a real scim2-server: orphaned, missing and unmanaged accounts, and their repair."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.lifecycle.reconcile import Drift, find_drift, repair_drift
from broker.lifecycle.worker import DeliveryWorker
from broker.settings import Settings
from broker.workspaces.models import Workspace
from broker.workspaces.service import connector_config
from tests.conftest import USER_SCHEMA, PartnerHandle
from tests.lifecycle.helpers import apply_policy, new_workspace, tasks_of
from tests.peers.scim2_server_process import Scim2Server

pytestmark = pytest.mark.peer


def _drift(engine: Engine, settings: Settings, workspace: Workspace) -> list[Drift]:
    async def run() -> list[Drift]:
        async with httpx.AsyncClient() as http:
            connector = connector_config(settings, workspace).open(http)
            with Session(engine) as session:
                return await find_drift(session, workspace=workspace, connector=connector)

    return asyncio.run(run())


def _deliver(engine: Engine, settings: Settings) -> None:
    async def run() -> None:
        async with DeliveryWorker(engine=engine, settings=settings) as worker:
            for _ in range(10):
                if not await worker.run_once():
                    return

    asyncio.run(run())


def _remote(server: Scim2Server, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.request(method, f"{server.base_url}{path}", headers=headers, **kwargs)  # type: ignore[arg-type]


def test_reconcile_finds_and_repairs_drift(
    engine: Engine, settings: Settings, partner: PartnerHandle, scim2_server: Scim2Server
) -> None:
    ws = new_workspace(engine, settings, values={"base_url": scim2_server.base_url, "token": scim2_server.token})
    rule = f"- id: {partner.slug}-r\n  tenant: {partner.slug}\n  when: {{ groups_any: [eng] }}\n"
    apply_policy(engine, rule + f"  grant: [{{ workspace: {ws.slug}, role: member }}]\n", partner_ids=[partner.id])
    kept, removed_remotely = partner.create_user("kept"), partner.create_user("gone")
    outsider = partner.create_user("outsider")
    partner.create_group("eng", members=[kept["id"], removed_remotely["id"]])
    _deliver(engine, settings)

    # Someone deletes a granted account in the app, and creates accounts by hand there.
    query = {"filter": f'externalId eq "{removed_remotely["id"]}"'}
    [gone_remote] = _remote(scim2_server, "GET", "/Users", params=query).json()["Resources"]
    assert _remote(scim2_server, "DELETE", f"/Users/{gone_remote['id']}").status_code == 204
    hand_made = {"schemas": [USER_SCHEMA], "userName": f"hand-{uuid.uuid4().hex[:8]}", "externalId": outsider["id"]}
    assert _remote(scim2_server, "POST", "/Users", json=hand_made).status_code == 201
    stranger = {"schemas": [USER_SCHEMA], "userName": f"stranger-{uuid.uuid4().hex[:8]}"}
    created = _remote(scim2_server, "POST", "/Users", json=stranger)
    assert created.status_code == 201

    mine = {kept["id"], removed_remotely["id"], outsider["id"]}
    drift = _drift(engine, settings, ws)
    assert {(d.kind, d.subject_id) for d in drift if d.subject_id in mine} == {
        ("missing", removed_remotely["id"]),
        ("orphaned", outsider["id"]),
    }
    assert ("unmanaged", created.json()["id"]) in {(d.kind, d.remote_id) for d in drift}

    with Session(engine) as session:
        assert repair_drift(session, workspace=ws, drift=[d for d in drift if d.subject_id in mine]) == 2
        session.commit()
    assert [a for _, a, _ in tasks_of(engine, outsider["id"])] == ["revoke_sessions", "deprovision"]
    assert [a for _, a, _ in tasks_of(engine, removed_remotely["id"])] == ["update"]
    _deliver(engine, settings)

    assert {(d.kind, d.subject_id) for d in _drift(engine, settings, ws) if d.subject_id in mine} == set()
