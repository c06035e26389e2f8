"""Reconciliation's orphans in the report: recorded by `entente workspace reconcile`, kept until resolved.

Runs its own scim2-server, so its accounts never meet the shared scenario's workspace listing.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from broker.reports.rows import Section
from broker.reports.runner import stale_access
from broker.reports.scope import PartnerRef, ReportOptions, ReportScope
from broker.settings import Settings
from broker.types import utcnow
from tests.conftest import USER_SCHEMA, new_partner
from tests.lifecycle.helpers import new_workspace
from tests.peers.scim2_server_process import running_scim2_server
from tests.reports.conftest import cli, deliver

pytestmark = pytest.mark.peer


def test_an_orphan_stays_until_its_removal_is_receipted(
    app: FastAPI, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    partner = new_partner(app, engine)
    zed = partner.create_user("zed")
    scope = ReportScope(partner=PartnerRef(partner.id, partner.slug))

    def section(wanted: Section) -> list[Any]:
        options = ReportOptions(
            inactive_days=90, silent_feed_days=30, token_expiry_days=30, token_unused_days=30, now=utcnow()
        )
        return [row for row in stale_access(engine, scope=scope, options=options) if row.section is wanted]

    with running_scim2_server(tmp_path) as server:
        ws = new_workspace(engine, settings, values={"base_url": server.base_url, "token": server.token})
        by_hand = {"schemas": [USER_SCHEMA], "userName": f"zed-{uuid.uuid4().hex[:6]}", "externalId": zed["id"]}
        made = httpx.post(f"{server.base_url}/Users", json=by_hand, headers={"Authorization": f"Bearer {server.token}"})
        assert made.status_code == 201, made.text
        orphan = (
            "orphaned_accounts", partner.slug, ws.slug, zed["id"], partner.email("zed"), made.json()["id"], "active"
        )  # fmt: skip

        assert cli(settings, "workspace", "reconcile", ws.slug).code == 0
        [first] = section(Section.ORPHANED_ACCOUNTS)
        assert first.flat()[:7] == orphan and first.first_found_at == first.last_seen_at
        assert cli(settings, "workspace", "reconcile", ws.slug).code == 0
        [again] = section(Section.ORPHANED_ACCOUNTS)
        assert again.first_found_at == first.first_found_at and again.last_seen_at > first.last_seen_at

        assert cli(settings, "workspace", "reconcile", ws.slug, "--fix").code == 0
        assert [row.flat()[:7] for row in section(Section.ORPHANED_ACCOUNTS)] == [orphan]  # queued is not done
        repairs = section(Section.PENDING_REVOCATIONS)
        assert [(r.subject_id, r.workspace, r.action, r.state, r.cause, r.person_state) for r in repairs] == [
            (zed["id"], ws.slug, "revoke_sessions", "pending", "reconcile", "active"),
            (zed["id"], ws.slug, "deprovision", "pending", "reconcile", "active"),
        ]

        deliver(engine, settings)
        assert section(Section.ORPHANED_ACCOUNTS) == []  # its removal was receipted after it was last seen
        assert section(Section.PENDING_REVOCATIONS) == []
        assert cli(settings, "workspace", "reconcile", ws.slug).code == 0
        assert section(Section.ORPHANED_ACCOUNTS) == []
    partner.client.close()
