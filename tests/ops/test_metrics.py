"""GET /metrics after real actions: SCIM pushes, a leaver delivered by the worker, the outbox, logins (issue 6)."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import respx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from broker.lifecycle.outbox import DeliveryTask, TaskAction
from broker.lifecycle.worker import DeliveryWorker
from broker.observability.metrics import observe_receipts
from broker.settings import Settings
from broker.types import utcnow
from broker.workspaces.models import OnLeave, Workspace
from tests.conftest import PATCH_SCHEMA, PartnerHandle
from tests.federation.browser import Browser
from tests.federation.conftest import FederateFactory
from tests.lifecycle.helpers import apply_policy, new_workspace, run_engine

HOOK = "http://hooks.invalid/entente"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def scrape(app: FastAPI) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (sample name, sorted labels) -> value; the body must parse as Prometheus text."""
    response = TestClient(app).get("/metrics")  # not entered: the lifespan (and its worker) must not start
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _policy(slug: str, workspace: str) -> str:
    return f"""
- id: {slug}-{workspace}
  tenant: {slug}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {workspace}, role: member }}]
"""


def _deliver_all(engine: Engine, settings: Settings) -> None:
    async def run() -> None:
        async with DeliveryWorker(engine=engine, settings=settings) as worker:
            for _ in range(10):
                if not await worker.run_once():
                    return

    with respx.mock(assert_all_called=False) as mock:
        mock.post(HOOK).mock(return_value=httpx.Response(204))
        asyncio.run(run())


def _serving_app(settings: Settings) -> FastAPI:
    """A second app on the same database whose lifespan never starts a worker (scrapes only)."""
    from broker.main import create_app

    return create_app(settings.model_copy(update={"delivery_worker": False}))


def test_scim_requests_are_counted_by_partner_and_status(app: FastAPI, partner: PartnerHandle) -> None:
    before = scrape(app)
    partner.create_user("ada")
    assert partner.client.get("/Users/no-such-id").status_code == 404
    anonymous = TestClient(app, base_url="http://testserver/scim/v2", headers={"Authorization": "Bearer nope"})
    assert anonymous.get("/Users").status_code == 401

    after = scrape(app)
    name = "entente_scim_requests_total"
    assert value(after, name, partner=partner.slug, method="POST", status="201") == 1
    assert value(after, name, partner=partner.slug, method="GET", status="404") == 1
    unauthenticated = dict(partner="none", method="GET", status="401")
    assert value(after, name, **unauthenticated) == value(before, name, **unauthenticated) + 1


def test_a_delivered_leaver_records_time_to_revoke(
    engine: Engine, settings: Settings, app: FastAPI, partner: PartnerHandle
) -> None:
    ws = new_workspace(
        engine, settings, connector="webhook", values={"url": HOOK, "secret": SECRET}, on_leave=OnLeave.SUSPEND
    )
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    amy = partner.create_user("amy")
    partner.create_group("eng", members=[amy["id"]])
    _deliver_all(engine, settings)
    before = scrape(app)

    leave = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]}
    assert partner.client.patch(f"/Users/{amy['id']}", json=leave).status_code == 200
    _deliver_all(engine, settings)
    after = scrape(app)

    revoke = dict(workspace_kind="webhook", action="suspend")
    assert value(after, "entente_time_to_revoke_seconds_count", **revoke) == (
        value(before, "entente_time_to_revoke_seconds_count", **revoke) + 1
    )
    took = value(after, "entente_time_to_revoke_seconds_sum", **revoke) - value(
        before, "entente_time_to_revoke_seconds_sum", **revoke
    )
    assert 0 < took < 30
    assert value(after, "entente_time_to_revoke_seconds_bucket", **revoke, le="+Inf") >= 1
    delivered = dict(workspace_kind="webhook", action="suspend", outcome="changed")
    assert (
        value(after, "entente_deliveries_total", **delivered)
        == value(before, "entente_deliveries_total", **delivered) + 1
    )
    assert value(after, "entente_outbox_tasks", workspace=ws.slug, state="pending") == 0


def test_failed_attempts_count_as_retry_or_dead() -> None:
    ws = Workspace(id="w-1", slug="w", name="w", connector="matrix", config_sealed="")
    task = DeliveryTask(
        id=1,
        workspace_id="w-1",
        partner_id="p",
        subject_id="s",
        action=TaskAction.DEPROVISION.value,
        cause="event:1",
        accepted_at=utcnow() - dt.timedelta(seconds=2),
    )

    class Failed:
        def __init__(self, delay: float | None) -> None:
            self.delay = delay

    class Released:
        pass

    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        labels = {"workspace_kind": "matrix", "action": "deprovision", "outcome": outcome}
        return REGISTRY.get_sample_value("entente_deliveries_total", labels) or 0.0

    retry, dead = count("retry"), count("dead")
    observe_receipts([(task, Failed(1.0)), (task, Failed(None)), (task, Released())], {"w-1": ws})
    assert (count("retry"), count("dead")) == (retry + 1, dead + 1)


def test_outbox_depth_is_counted_at_scrape_time(
    engine: Engine, settings: Settings, app: FastAPI, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings, connector="webhook", values={"url": HOOK, "secret": SECRET})
    idle = new_workspace(engine, settings, connector="webhook", values={"url": HOOK, "secret": SECRET})
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    people = [partner.create_user(name) for name in ("bo", "cy")]
    partner.create_group("eng", members=[p["id"] for p in people])
    run_engine(engine)  # tasks written, nobody delivers them

    samples = scrape(app)
    assert value(samples, "entente_database_up") == 1
    assert value(samples, "entente_outbox_tasks", workspace=ws.slug, state="pending") == 2
    assert value(samples, "entente_outbox_tasks", workspace=ws.slug, state="dead") == 0
    assert ("entente_outbox_tasks", (("state", "running"), ("workspace", idle.slug))) in samples
    assert value(samples, "entente_outbox_oldest_task_age_seconds", workspace=ws.slug) > 0
    assert value(samples, "entente_outbox_oldest_task_age_seconds", workspace=idle.slug) == 0


def test_database_down_is_a_metric_not_a_failed_scrape(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    unreachable = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/missing/dir/x.db"})
    samples = scrape(_serving_app(unreachable))
    assert value(samples, "entente_database_up") == 0
    assert not any(name == "entente_outbox_tasks" for name, _ in samples)


def test_login_outcomes_are_counted_by_partner(app: FastAPI, federate: FederateFactory, browser: Browser) -> None:
    fed = federate()
    sub = fed.account()
    fed.partner.create_user("ada", externalId=sub)
    callback = browser.sign_in_at_idp(browser.to_idp(fed.start), sub)
    assert browser.get(callback).status_code == 303
    forged = browser.get(f"/login/callback/{fed.connection_id}?state=forged&code=x")
    assert forged.status_code == 400

    samples = scrape(app)
    slug = fed.partner.slug
    assert value(samples, "entente_logins_total", partner=slug, outcome="succeeded", reason="") == 1
    failed = [
        v
        for (name, labels), v in samples.items()
        if name == "entente_logins_total" and ("partner", slug) in labels and ("outcome", "failed") in labels
    ]
    assert failed == [1.0]
