"""The delivery worker against a real scim2-server, and its failure handling with respx (issue 4, "Delivery")."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid

import httpx
import pytest
import respx
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.lifecycle.grants import WorkspaceAccount
from broker.lifecycle.outbox import (
    DeliveryReceipt,
    DeliveryTask,
    NewTask,
    TaskAction,
    TaskState,
    claim_tasks,
    enqueue,
    retry_dead_tasks,
)
from broker.lifecycle.worker import DeliveryWorker
from broker.settings import Settings
from broker.types import utcnow
from broker.workspaces.models import Workspace
from tests.conftest import PATCH_SCHEMA, PartnerHandle
from tests.lifecycle.helpers import apply_policy, new_workspace, tasks_of
from tests.peers.scim2_server_process import Scim2Server


def _policy(slug: str, workspace: str) -> str:
    return f"""
- id: {slug}-{workspace}
  tenant: {slug}
  when: {{ groups_any: [eng] }}
  grant: [{{ workspace: {workspace}, role: member }}]
"""


def _deliver_all(engine: Engine, settings: Settings, *, workspace: Workspace, rounds: int = 10) -> None:
    """Run engine + delivery rounds for one workspace until nothing more is due (or ``rounds`` pass).

    One workspace only: the session's database holds other tests' due tasks, which would otherwise
    share (and could fill) a round's claim.
    """

    async def run() -> None:
        async with DeliveryWorker(engine=engine, settings=settings, workspaces=[workspace.id]) as worker:
            for _ in range(rounds):
                if not await worker.run_once():
                    return

    asyncio.run(run())


def _remote_users(server: Scim2Server, subject_id: str) -> list[dict]:  # type: ignore[type-arg]
    response = httpx.get(
        f"{server.base_url}/Users",
        params={"filter": f'externalId eq "{subject_id}"'},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    response.raise_for_status()
    return response.json().get("Resources", [])  # type: ignore[no-any-return]


def _receipts(engine: Engine, subject_id: str) -> list[DeliveryReceipt]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(DeliveryReceipt)
                .where(DeliveryReceipt.subject_id == subject_id)
                .order_by(col(DeliveryReceipt.id))
            ).all()
        )


@pytest.mark.peer
def test_joiner_reaches_scim2_server_and_leaver_is_removed(
    engine: Engine, settings: Settings, partner: PartnerHandle, scim2_server: Scim2Server
) -> None:
    ws = new_workspace(engine, settings, values={"base_url": scim2_server.base_url, "token": scim2_server.token})
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    amy = partner.create_user("amy", displayName="Amy Pond")
    partner.create_group("eng", members=[amy["id"]])
    _deliver_all(engine, settings, workspace=ws)

    [remote] = _remote_users(scim2_server, amy["id"])
    assert remote["userName"] == partner.email("amy") and remote["active"] is True
    with Session(engine) as session:
        account = session.exec(select(WorkspaceAccount).where(WorkspaceAccount.subject_id == amy["id"])).one()
    assert account.remote_id == remote["id"] and account.state == "active"

    leave = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]}
    assert partner.client.patch(f"/Users/{amy['id']}", json=leave).status_code == 200
    _deliver_all(engine, settings, workspace=ws)

    assert _remote_users(scim2_server, amy["id"]) == []
    receipts = _receipts(engine, amy["id"])
    assert [(r.action, r.outcome) for r in receipts] == [
        ("update", "changed"),
        ("revoke_sessions", "unsupported"),  # plain SCIM has no session lever; recorded, not hidden
        ("deprovision", "changed"),
    ]
    assert all(r.attempts == 1 and r.first_attempt_at <= r.done_at for r in receipts)
    assert tasks_of(engine, amy["id"]) == []


def _one_task(engine: Engine, ws: Workspace, action: TaskAction = TaskAction.DEPROVISION) -> str:
    subject = str(uuid.uuid4())
    with Session(engine) as session:
        partner_id = session.exec(select(WorkspaceAccount.partner_id)).first()
        from broker.tenants.models import Partner

        partner_id = partner_id or session.exec(select(Partner.id)).first()
        assert partner_id is not None
        enqueue(session, [NewTask(ws.id, partner_id, subject, action, "test", utcnow())])
        session.commit()
    return subject


def _task(engine: Engine, subject: str) -> DeliveryTask:
    with Session(engine) as session:
        return session.exec(select(DeliveryTask).where(DeliveryTask.subject_id == subject)).one()


BASE = "http://workspace.invalid/scim/v2"


def test_429_retry_after_is_honoured(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    ws = new_workspace(engine, settings, values={"base_url": BASE, "token": "t"})
    subject = _one_task(engine, ws)
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="workspace.invalid").mock(return_value=httpx.Response(429, headers={"Retry-After": "30"}))
        mock.route(host="127.0.0.1").pass_through()
        before = utcnow()
        _deliver_all(engine, settings, workspace=ws, rounds=1)
    task = _task(engine, subject)
    assert task.state == TaskState.PENDING.value and task.attempts == 1
    assert task.not_before >= before + dt.timedelta(seconds=29)
    assert "429" in (task.last_error or "")


def test_refused_request_goes_to_dead_letters_and_can_be_retried(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings, values={"base_url": BASE, "token": "t"})
    subject = _one_task(engine, ws, TaskAction.UPDATE)
    with Session(engine) as session:  # give the update a spec, as the engine would
        task = session.exec(select(DeliveryTask).where(DeliveryTask.subject_id == subject)).one()
        task.spec = {"user_name": "x@example.test", "email": None, "display_name": "X"}
        session.add(task)
        session.commit()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="workspace.invalid").mock(
            return_value=httpx.Response(400, json={"status": "400", "detail": "bad userName"})
        )
        _deliver_all(engine, settings, workspace=ws, rounds=1)
    dead = _task(engine, subject)
    assert dead.state == TaskState.DEAD.value and "bad userName" in (dead.last_error or "")
    with Session(engine) as session:
        assert retry_dead_tasks(session, task_ids=[dead.id or 0]) == 1
        session.commit()
    again = _task(engine, subject)
    assert again.state == TaskState.PENDING.value and again.attempts == 0


def test_attempts_run_out_into_dead_letters(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    few = settings.model_copy(update={"delivery_max_attempts": 2, "delivery_backoff_seconds": 0.001})
    ws = new_workspace(engine, settings, values={"base_url": BASE, "token": "t"})
    subject = _one_task(engine, ws)
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="workspace.invalid").mock(return_value=httpx.Response(503))
        for _ in range(3):
            _deliver_all(engine, few, workspace=ws, rounds=1)
            time.sleep(0.01)
    task = _task(engine, subject)
    assert task.state == TaskState.DEAD.value and task.attempts == 2
    assert "gave up after 2 attempts" in (task.last_error or "")


def _enqueue_chain(engine: Engine, ws: Workspace, partner: PartnerHandle, *actions: TaskAction) -> str:
    subject = str(uuid.uuid4())
    with Session(engine) as session:
        enqueue(session, [NewTask(ws.id, partner.id, subject, action, "test", utcnow()) for action in actions])
        session.commit()
    return subject


def _claim_of(engine: Engine, subject: str) -> list[DeliveryTask]:
    with Session(engine) as session:
        return [t for t in claim_tasks(session, limit=1000, lease=dt.timedelta(seconds=60)) if t.subject_id == subject]


def test_tasks_of_one_person_in_one_workspace_are_claimed_as_one_chain_in_order(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings)
    subject = _enqueue_chain(engine, ws, partner, TaskAction.REVOKE_SESSIONS, TaskAction.DEPROVISION)
    first = _claim_of(engine, subject)
    assert [t.action for t in first] == ["revoke_sessions", "deprovision"]
    assert first[0].id is not None and first[1].id is not None and first[0].id < first[1].id
    assert _claim_of(engine, subject) == []  # nothing of the pair again until the chain is done or its lease runs out


def test_a_task_waits_while_an_earlier_one_of_its_pair_waits_for_a_retry(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    from broker.lifecycle.outbox import reschedule_task

    ws = new_workspace(engine, settings)
    subject = _enqueue_chain(engine, ws, partner, TaskAction.UPDATE)
    [update] = _claim_of(engine, subject)
    with Session(engine) as session:
        assert reschedule_task(session, update, delay=60, error="HTTP 503")
        enqueue(session, [NewTask(ws.id, partner.id, subject, TaskAction.DEPROVISION, "test", utcnow())])
        session.commit()
    assert _claim_of(engine, subject) == []  # the leaver's removal does not overtake the update being retried


def test_a_later_task_is_not_claimed_while_another_claim_holds_an_earlier_one(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    """PostgreSQL: a claim in flight locks the pair's first task; a concurrent claim must not take the second."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite serialises claims (BEGIN IMMEDIATE): no claim is ever in flight beside another")
    from sqlalchemy import select as core_select

    ws = new_workspace(engine, settings)
    subject = _enqueue_chain(engine, ws, partner, TaskAction.REVOKE_SESSIONS, TaskAction.DEPROVISION)
    table = DeliveryTask.__table__  # type: ignore[attr-defined]
    with Session(engine) as holder:
        first_id = holder.execute(
            core_select(table.c.id).where(table.c.subject_id == subject).order_by(table.c.id).limit(1).with_for_update()
        ).scalar_one()
        assert _claim_of(engine, subject) == []  # the first is locked (skipped), so the second must wait too
        holder.rollback()
    assert [t.id for t in _claim_of(engine, subject)][0] == first_id


def test_a_retryable_failure_hands_the_rest_of_its_chain_back_unattempted(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings, values={"base_url": BASE, "token": "t"})
    subject = _enqueue_chain(engine, ws, partner, TaskAction.SUSPEND, TaskAction.DEPROVISION)
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="workspace.invalid").mock(return_value=httpx.Response(503))
        _deliver_all(engine, settings, workspace=ws, rounds=1)
    with Session(engine) as session:
        tasks = list(
            session.exec(select(DeliveryTask).where(DeliveryTask.subject_id == subject).order_by(col(DeliveryTask.id)))
        )
    assert [(t.action, t.state, t.attempts) for t in tasks] == [
        ("suspend", TaskState.PENDING.value, 1),
        ("deprovision", TaskState.PENDING.value, 0),  # never tried: no attempt spent, no first try recorded
    ]
    assert tasks[1].first_attempt_at is None and tasks[1].lease_until is None
    assert "503" in (tasks[0].last_error or "") and tasks[1].last_error is None


def test_a_claim_whose_worker_died_is_claimable_after_its_lease(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    ws = new_workspace(engine, settings)
    subject = str(uuid.uuid4())
    with Session(engine) as session:
        enqueue(session, [NewTask(ws.id, partner.id, subject, TaskAction.DEPROVISION, "test", utcnow())])
        session.commit()
    with Session(engine) as session:
        mine = [t for t in claim_tasks(session, limit=1000, lease=dt.timedelta(seconds=-1)) if t.subject_id == subject]
    assert len(mine) == 1  # "died" at once: its lease is already over
    with Session(engine) as session:
        again = [t for t in claim_tasks(session, limit=1000, lease=dt.timedelta(seconds=60)) if t.subject_id == subject]
    assert [t.id for t in again] == [mine[0].id] and again[0].attempts == 2


def test_concurrent_claims_never_share_a_task(engine: Engine, settings: Settings, partner: PartnerHandle) -> None:
    ws = new_workspace(engine, settings)
    subjects = [str(uuid.uuid4()) for _ in range(60)]
    with Session(engine) as session:
        enqueue(session, [NewTask(ws.id, partner.id, s, TaskAction.DEPROVISION, "test", utcnow()) for s in subjects])
        session.commit()
    claimed: list[list[int]] = []
    barrier = threading.Barrier(3)

    def claimer() -> None:
        barrier.wait()
        with Session(engine) as session:
            tasks = claim_tasks(session, limit=25, lease=dt.timedelta(seconds=60))
        claimed.append([t.id for t in tasks if t.subject_id in subjects and t.id is not None])

    threads = [threading.Thread(target=claimer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every))  # no task claimed twice
    assert len(every) > 0


@pytest.mark.peer
def test_worker_wakes_at_once_on_a_scim_change(
    engine: Engine, settings: Settings, partner: PartnerHandle, scim2_server: Scim2Server
) -> None:
    slow_poll = settings.model_copy(update={"delivery_poll_seconds": 30.0})
    ws = new_workspace(engine, settings, values={"base_url": scim2_server.base_url, "token": scim2_server.token})
    apply_policy(engine, _policy(partner.slug, ws.slug), partner_ids=[partner.id])
    bo = partner.create_user("bo")
    group = partner.create_group("eng")

    async def scenario() -> float:
        stop = asyncio.Event()
        worker = DeliveryWorker(engine=engine, settings=slow_poll)
        running = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.5)  # the worker has drained what was there and now waits (poll: 30 s)
        started = time.monotonic()
        add = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": bo["id"]}]}],
        }
        response = await asyncio.to_thread(partner.client.patch, f"/Groups/{group['id']}", json=add)
        assert response.status_code in (200, 204)
        while not await asyncio.to_thread(_remote_users, scim2_server, bo["id"]):
            if time.monotonic() - started > 10:
                break
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        stop.set()
        await running
        return elapsed

    elapsed = asyncio.run(scenario())
    assert elapsed < 5, f"provisioned after {elapsed:.2f}s: the worker waited for its poll instead of waking"


def test_a_worker_whose_lease_ran_out_cannot_record_over_the_new_claim(
    engine: Engine, settings: Settings, partner: PartnerHandle
) -> None:
    from broker.lifecycle.outbox import complete_task

    ws = new_workspace(engine, settings)
    subject = str(uuid.uuid4())
    with Session(engine) as session:
        enqueue(session, [NewTask(ws.id, partner.id, subject, TaskAction.DEPROVISION, "test", utcnow())])
        session.commit()
    with Session(engine) as session:
        [slow] = [
            t for t in claim_tasks(session, limit=1000, lease=dt.timedelta(seconds=-1)) if t.subject_id == subject
        ]
    with Session(engine) as session:
        [fresh] = [
            t for t in claim_tasks(session, limit=1000, lease=dt.timedelta(seconds=60)) if t.subject_id == subject
        ]
    with Session(engine) as session:
        assert complete_task(session, slow, outcome="changed", remote_id=None) is False  # fenced off
        assert complete_task(session, fresh, outcome="changed", remote_id=None) is True
        session.commit()
    assert [r.task_id for r in _receipts(engine, subject)] == [fresh.id]
