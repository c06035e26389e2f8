"""The delivery worker: runs the engine, claims tasks, calls connectors, retries, paces, buries.

One asyncio task per process. It wakes the moment a local commit records lifecycle events
(broker.lifecycle.wakeup) and otherwise polls every ``delivery_poll_seconds`` for work accepted by
other processes or due for retry. Database work runs in threads (the sync engine); deliveries of a
claimed batch run concurrently, each paced to its workspace's ``rate_per_second``.

Failure mapping (connectors.base exception tree):
    RetryableError    -> retried after max(Retry-After, full-jitter exponential backoff)
    CredentialsError  -> retried with backoff; the workspace's status_reason says why
    RejectedError     -> dead letter at once (the workspace refuses this request for good)
    UnsupportedError  -> revoke_sessions: receipt "unsupported"; suspend: falls back to deprovision
    anything else     -> retried (a bug must not lose a leaver); dead after max attempts
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine, insert, update
from sqlmodel import Session, col, select

from broker.audit.log import Actor, AuditItem, append_audits
from broker.lifecycle import wakeup
from broker.lifecycle.engine import process_events
from broker.lifecycle.grants import AccountState, WorkspaceAccount
from broker.lifecycle.loop import BackgroundLoop
from broker.lifecycle.outbox import (
    DeliveryTask,
    TaskAction,
    claim_tasks,
    complete_tasks,
    held_claims,
    release_task,
    reschedule_task,
)
from broker.observability.metrics import observe_receipts
from broker.settings import Settings
from broker.types import utcnow
from broker.workspaces.models import Workspace, WorkspaceStatus
from broker.workspaces.service import connector_config
from connectors.base import (
    AccountRef,
    AccountSpec,
    Connector,
    ConnectorError,
    CredentialsError,
    RejectedError,
    Result,
    RetryableError,
    UnsupportedError,
)

__all__ = ["DeliveryWorker", "spec_from_json"]

log = logging.getLogger("entente.delivery")
_WORKER = Actor(kind="system", id="delivery-worker")
_ENGINE_BATCH = 500
"""Events one engine pass takes (``process_events``'s ``limit``)."""
_ACCOUNTS = WorkspaceAccount.__table__  # type: ignore[attr-defined]
_STATE_AFTER = {
    TaskAction.UPDATE: AccountState.ACTIVE,
    TaskAction.SUSPEND: AccountState.SUSPENDED,
    TaskAction.DEPROVISION: AccountState.DEPROVISIONED,
}


def spec_from_json(spec: Mapping[str, Any]) -> AccountSpec:
    """The AccountSpec a task carries (stored as JSON by the engine)."""
    return AccountSpec(
        user_name=spec["user_name"],
        email=spec.get("email"),
        display_name=spec.get("display_name"),
        given_name=spec.get("given_name"),
        family_name=spec.get("family_name"),
        roles=frozenset(spec.get("roles") or ()),
        groups=frozenset(spec.get("groups") or ()),
        active=bool(spec.get("active", True)),
        attributes=dict(spec.get("attributes") or {}),
    )


@dataclass(frozen=True)
class _Done:
    outcome: str
    remote_id: str | None
    action: TaskAction


@dataclass(frozen=True)
class _Failed:
    error: str
    delay: float | None
    """Seconds until the next attempt; ``None`` buries the task."""
    credentials: bool = False


@dataclass(frozen=True)
class _Released:
    """Not attempted: an earlier task of its chain failed and will be retried first."""


_Outcome = _Done | _Failed | _Released
_RELEASED = _Released()


def _audit_item(task: DeliveryTask, result: _Done | _Failed, workspaces: Mapping[str, Workspace]) -> AuditItem:
    """The audit record of one delivery attempt: which process, which workspace, what came of it."""
    return AuditItem(
        action=f"delivery.{result.action}" if isinstance(result, _Done) else "delivery.failed",
        partner_id=task.partner_id,
        resource_type="Task",
        resource_id=str(task.id),
        detail={
            "workspace": workspaces[task.workspace_id].slug if task.workspace_id in workspaces else None,
            "subject_id": task.subject_id,
            "attempt": task.attempts,
            "worker_pid": os.getpid(),  # which process delivered: several may share a database
            **(
                {"outcome": result.outcome, "remote_id": result.remote_id}
                if isinstance(result, _Done)
                else {"error": result.error[:300], "dead": result.delay is None}
            ),
        },
    )


class _Pacer:
    """Spaces calls to one workspace at least ``1 / rate`` seconds apart (per process)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


class DeliveryWorker(BackgroundLoop):
    """Engine + outbox consumer of one process; ``run`` until ``stop`` is set."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        http: httpx.AsyncClient | None = None,
        workspaces: Collection[str] | None = None,
    ) -> None:
        """``workspaces``: deliver only to these workspace ids (a worker dedicated to some); ``None``: all."""
        super().__init__(
            engine=engine, settings=settings, http=http, wake_source=(wakeup.subscribe, wakeup.unsubscribe), log=log
        )
        self._only = frozenset(workspaces) if workspaces is not None else None
        self._connectors: dict[str, tuple[str, Connector, httpx.AsyncClient]] = {}
        self._pacers: dict[str, _Pacer] = {}

    # -- database steps (run in threads) ------------------------------------------------------
    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _run_engine(self) -> int:
        """Consume the events due; a short batch means none were left (a later commit wakes us again)."""
        consumed, limit = 0, _ENGINE_BATCH
        with self._session() as session:
            while (n := process_events(session, limit=limit)) > 0:
                consumed += n
                if n < limit:
                    break
        return consumed

    def _claim(self) -> tuple[list[DeliveryTask], dict[str, Workspace], dict[tuple[str, str], str | None]]:
        with self._session() as session:
            workspaces = {w.id: w for w in session.exec(select(Workspace)).all()}
            paused = [
                w.id
                for w in workspaces.values()
                if w.status == WorkspaceStatus.PAUSED.value or (self._only is not None and w.id not in self._only)
            ]
            tasks = claim_tasks(
                session,
                limit=self.settings.delivery_batch_size,
                lease=dt.timedelta(seconds=self.settings.delivery_lease_seconds),
                exclude_workspaces=paused,
            )
            remote: dict[tuple[str, str], str | None] = {}
            if tasks:
                rows = session.exec(
                    select(
                        WorkspaceAccount.workspace_id, WorkspaceAccount.subject_id, WorkspaceAccount.remote_id
                    ).where(col(WorkspaceAccount.subject_id).in_({t.subject_id for t in tasks}))
                ).all()
                remote = {(w, s): r for w, s, r in rows}
        return tasks, workspaces, remote

    def _record(self, results: list[tuple[DeliveryTask, _Outcome]], workspaces: Mapping[str, Workspace]) -> None:
        """Write every outcome of a round in one transaction: receipts, retries, accounts and audit records."""
        with self._session() as session:
            held = held_claims(session, [task for task, _ in results])
            done: list[tuple[DeliveryTask, _Done]] = []
            audits: list[AuditItem] = []
            for task, result in results:
                if task.id not in held:
                    log.warning("task %s was claimed again after its lease ran out; not recording", task.id)
                    continue
                if isinstance(result, _Released):
                    release_task(session, task)
                    continue
                if isinstance(result, _Done):
                    done.append((task, result))
                else:
                    reschedule_task(session, task, delay=result.delay, error=result.error)
                    if result.credentials:
                        session.execute(
                            update(Workspace.__table__)  # type: ignore[attr-defined]
                            .where(Workspace.__table__.c.id == task.workspace_id)  # type: ignore[attr-defined]
                            .values(status_reason=result.error[:500])
                        )
                audits.append(_audit_item(task, result, workspaces))
            complete_tasks(session, [(task, result.outcome, result.remote_id) for task, result in done])
            self._remember_accounts(session, done)
            append_audits(session, actor=_WORKER, items=audits)
            session.commit()
        observe_receipts([(task, result) for task, result in results if task.id in held], workspaces)

    @staticmethod
    def _remember_accounts(session: Session, done: Sequence[tuple[DeliveryTask, _Done]]) -> None:
        """Record each delivered account's remote id and state (the last task of a pair wins)."""
        latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        for task, result in done:
            state = _STATE_AFTER.get(result.action)
            key = (task.workspace_id, task.partner_id, task.subject_id)
            values = latest.setdefault(key, {})
            if result.remote_id is not None:
                values["remote_id"] = result.remote_id
            if state is not None:
                values["state"] = state.value
        latest = {key: values for key, values in latest.items() if values}
        if not latest:
            return
        existing = {
            (row.workspace_id, row.partner_id, row.subject_id): row.id
            for row in session.execute(
                select(_ACCOUNTS.c.id, _ACCOUNTS.c.workspace_id, _ACCOUNTS.c.partner_id, _ACCOUNTS.c.subject_id).where(
                    _ACCOUNTS.c.subject_id.in_({subject for _, _, subject in latest})
                )
            )
        }
        now = utcnow()
        for (workspace_id, partner_id, subject_id), values in latest.items():
            row_id = existing.get((workspace_id, partner_id, subject_id))
            if row_id is not None:
                session.execute(update(_ACCOUNTS).where(_ACCOUNTS.c.id == row_id).values(updated_at=now, **values))
            else:
                session.execute(
                    insert(_ACCOUNTS),
                    {
                        "workspace_id": workspace_id,
                        "partner_id": partner_id,
                        "subject_id": subject_id,
                        "state": AccountState.ACTIVE.value,
                        "updated_at": now,
                        **values,
                    },
                )

    # -- delivery -----------------------------------------------------------------------------
    async def _connector(self, workspace: Workspace) -> Connector:
        """The workspace's connector on an HTTP client of its own, rebuilt when its config changes.

        One client per workspace is a bulkhead (a slow workspace cannot hold the connections the
        others need) and keeps each connection pool small: httpcore's pool scans every connection it
        holds on each request, which one shared pool of hundreds of connections made the hottest code.
        """
        cached = self._connectors.get(workspace.id)
        if cached is not None and cached[0] == workspace.config_sealed:
            return cached[1]
        if cached is not None:
            await _close(cached[1], cached[2])
        http = self._http if not self._owns_http and self._http is not None else self._new_client()
        connector = connector_config(self.settings, workspace).open(http)
        self._connectors[workspace.id] = (workspace.config_sealed, connector, http)
        return connector

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.settings.delivery_timeout_seconds)

    def _backoff(self, attempts: int) -> float:
        ceiling = min(
            self.settings.delivery_backoff_max_seconds,
            self.settings.delivery_backoff_seconds * (2 ** max(0, attempts - 1)),
        )
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret

    def _retry(
        self, task: DeliveryTask, error: str, *, hint: float | None = None, credentials: bool = False
    ) -> _Failed:
        if task.attempts >= self.settings.delivery_max_attempts:
            return _Failed(f"{error} (gave up after {task.attempts} attempts)", None, credentials)
        return _Failed(error, max(hint or 0.0, self._backoff(task.attempts)), credentials)

    async def _call(
        self, connector: Connector, task: DeliveryTask, ref: AccountRef
    ) -> tuple[Result | None, TaskAction]:
        """Run the task's action; ``None`` = the workspace has no such lever (and no fallback applies)."""
        op_id = str(task.id)
        action = TaskAction(task.action)
        if action is TaskAction.UPDATE:
            return await connector.update(ref, spec_from_json(task.spec or {}), op_id=op_id), action
        if action is TaskAction.SUSPEND:
            try:
                return await connector.suspend(ref, op_id=op_id), action
            except UnsupportedError:  # policy fallback: an account that cannot be disabled is removed
                return await connector.deprovision(ref, op_id=op_id), TaskAction.DEPROVISION
        if action is TaskAction.REVOKE_SESSIONS:
            try:
                return await connector.revoke_sessions(ref, op_id=op_id), action
            except UnsupportedError:
                return None, action
        return await connector.deprovision(ref, op_id=op_id), action

    async def _deliver(self, task: DeliveryTask, workspace: Workspace, remote_id: str | None) -> _Done | _Failed:
        pacer = self._pacers.setdefault(workspace.id, _Pacer(workspace.rate_per_second))
        pacer.interval = 1.0 / workspace.rate_per_second if workspace.rate_per_second > 0 else 0.0
        await pacer.wait()
        ref = AccountRef(tenant_id=task.partner_id, subject_id=task.subject_id, remote_id=remote_id)
        try:
            result, action = await self._call(await self._connector(workspace), task, ref)
        except RetryableError as exc:
            return self._retry(task, exc.detail, hint=exc.retry_after)
        except CredentialsError as exc:
            return self._retry(task, exc.detail, credentials=True)
        except RejectedError as exc:
            return _Failed(exc.detail, None)
        except ConnectorError as exc:
            return self._retry(task, exc.detail)
        except Exception as exc:  # a connector bug must not lose the task: retry, then bury visibly
            log.exception("delivery of task %s to %s failed unexpectedly", task.id, workspace.slug)
            return self._retry(task, f"{type(exc).__name__}: {exc}")
        if result is None:
            return _Done("unsupported", remote_id, action)
        return _Done(result.outcome.value, result.remote_id or remote_id, action)

    async def __aenter__(self) -> DeliveryWorker:
        self._ensure_http()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def run_once(self) -> int:
        """One engine pass and one claim-deliver-record round; returns how many tasks were attempted.

        Chains (the claimed tasks of one workspace and person) run concurrently with each other, the
        tasks of a chain one after another; a retryable failure hands the rest of its chain back.
        """
        self._ensure_http()
        await asyncio.to_thread(self._run_engine)
        tasks, workspaces, remote = await asyncio.to_thread(self._claim)
        if not tasks:
            return 0
        chains: dict[tuple[str, str], list[DeliveryTask]] = {}
        for task in tasks:  # claimed in id order, so each chain is in order
            chains.setdefault((task.workspace_id, task.subject_id), []).append(task)

        async def deliver(pair: tuple[str, str], chain: list[DeliveryTask]) -> list[tuple[DeliveryTask, _Outcome]]:
            workspace = workspaces.get(pair[0])
            remote_id = remote.get(pair)
            outcomes: list[tuple[DeliveryTask, _Outcome]] = []
            for position, task in enumerate(chain):
                if workspace is None:
                    result: _Done | _Failed = _Failed("workspace removed", None)
                else:
                    result = await self._deliver(task, workspace, remote_id)
                outcomes.append((task, result))
                if isinstance(result, _Done):
                    remote_id = result.remote_id
                elif result.delay is not None:
                    outcomes.extend((later, _RELEASED) for later in chain[position + 1 :])
                    break
            return outcomes

        rounds = await asyncio.gather(*(deliver(pair, chain) for pair, chain in chains.items()))
        await asyncio.to_thread(self._record, [outcome for chain in rounds for outcome in chain], workspaces)
        return len(tasks)

    async def aclose(self) -> None:
        for _, connector, http in self._connectors.values():
            await _close(connector, http if http is not self._http else None)
        self._connectors.clear()
        await super().aclose()


async def _close(connector: Connector, http: httpx.AsyncClient | None) -> None:
    """Close a connector and the HTTP client made for it; errors on the way out are of no use."""
    with contextlib.suppress(Exception):
        await connector.aclose()
    if http is not None:
        with contextlib.suppress(Exception):
            await http.aclose()
