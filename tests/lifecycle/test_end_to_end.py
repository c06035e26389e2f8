"""Joiner, mover and leaver from a partner's SCIM feed to two real workspaces: scim2-server and Synapse.

Issue 4, "How it is checked": a joiner appears in both; a mover who loses a group loses that
workspace; a leaver is deactivated in both and their Synapse access token stops working.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.engine import Engine

from broker.lifecycle.worker import DeliveryWorker
from broker.settings import Settings
from broker.workspaces.models import OnLeave
from connectors.matrix import localpart_for
from tests.conftest import PATCH_SCHEMA, PartnerHandle
from tests.lifecycle.helpers import apply_policy, new_workspace, tasks_of
from tests.peers.scim2_server_process import Scim2Server

if TYPE_CHECKING:
    from tests.peers.synapse_process import Synapse

pytestmark = pytest.mark.peer


def _drain(engine: Engine, settings: Settings) -> None:
    async def run() -> None:
        async with DeliveryWorker(engine=engine, settings=settings) as worker:
            for _ in range(20):
                if not await worker.run_once():
                    return

    asyncio.run(run())


def _scim_user(server: Scim2Server, subject_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{server.base_url}/Users",
        params={"filter": f'externalId eq "{subject_id}"'},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    response.raise_for_status()
    found = response.json().get("Resources", [])
    return found[0] if found else None


def _matrix_user(synapse: Synapse, user_id: str) -> dict[str, Any] | None:
    response = synapse.admin("GET", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}")
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


def _patch(partner: PartnerHandle, path: str, operations: list[dict[str, Any]]) -> None:
    response = partner.client.patch(path, json={"schemas": [PATCH_SCHEMA], "Operations": operations})
    assert response.status_code in (200, 204), response.text


def test_joiner_mover_leaver_across_scim2_server_and_synapse(
    engine: Engine, settings: Settings, partner: PartnerHandle, scim2_server: Scim2Server, synapse: Synapse
) -> None:
    wiki = new_workspace(engine, settings, values={"base_url": scim2_server.base_url, "token": scim2_server.token})
    chat = new_workspace(
        engine,
        settings,
        connector="matrix",
        values={
            "homeserver_url": synapse.base_url,
            "server_name": synapse.server_name,
            "admin_token": synapse.admin_token,
        },
        on_leave=OnLeave.DEPROVISION,
    )
    apply_policy(
        engine,
        f"""
- id: {partner.slug}-wiki
  tenant: {partner.slug}
  when: {{ groups_any: [staff] }}
  grant: [{{ workspace: {wiki.slug}, role: member }}]
- id: {partner.slug}-chat
  tenant: {partner.slug}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {chat.slug}, role: member }}]
""",
        partner_ids=[partner.id],
    )

    # Joiner: in staff and eng -> provisioned in the wiki (scim2-server) and the chat (Synapse).
    nia = partner.create_user("nia", displayName="Nia N", name={"givenName": "Nia", "familyName": "N"})
    partner.create_group("staff", members=[nia["id"]])
    eng = partner.create_group("eng", members=[nia["id"]])
    _drain(engine, settings)
    remote = _scim_user(scim2_server, nia["id"])
    assert remote is not None and remote["active"] is True and remote["userName"] == partner.email("nia")
    matrix_id = synapse.user_id(localpart_for(partner.email("nia")))
    account = _matrix_user(synapse, matrix_id)
    assert account is not None and account["deactivated"] is False and account["displayname"] == "Nia N"
    synapse.set_password(matrix_id, "correct horse battery")
    token = synapse.login_token(matrix_id, "correct horse battery")
    assert synapse.token_works(token)

    # Mover: leaves eng -> loses the chat (sessions revoked, account deactivated), keeps the wiki.
    _patch(partner, f"/Groups/{eng['id']}", [{"op": "remove", "path": f'members[value eq "{nia["id"]}"]'}])
    _drain(engine, settings)
    assert not synapse.token_works(token)
    moved = _matrix_user(synapse, matrix_id)
    assert moved is not None and moved["deactivated"] is True
    assert _scim_user(scim2_server, nia["id"]) is not None

    # Back in eng, then a leaver: deactivated in the partner's IdP -> gone from both, token dead.
    _patch(partner, f"/Groups/{eng['id']}", [{"op": "add", "path": "members", "value": [{"value": nia["id"]}]}])
    _drain(engine, settings)
    back = _matrix_user(synapse, matrix_id)
    assert back is not None and back["deactivated"] is False
    synapse.set_password(matrix_id, "correct horse battery")
    token = synapse.login_token(matrix_id, "correct horse battery")
    assert synapse.token_works(token)

    _patch(partner, f"/Users/{nia['id']}", [{"op": "replace", "path": "active", "value": False}])
    _drain(engine, settings)
    assert not synapse.token_works(token)
    gone = _matrix_user(synapse, matrix_id)
    assert gone is not None and gone["deactivated"] is True
    assert _scim_user(scim2_server, nia["id"]) is None
    assert synapse.login(matrix_id, "correct horse battery").status_code in (401, 403)
    assert tasks_of(engine, nia["id"]) == []  # everything delivered, nothing dead
