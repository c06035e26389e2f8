"""The contract every downstream connector keeps, run against each real peer (after dex ``storage/conformance``).

How to use it in ``tests/connectors/test_<kind>.py``::

    class TestScimContract(ConnectorContract):
        supports_revoke_sessions = False          # only if the workspace has no session API

        @pytest.fixture
        async def connector(self, ...) -> AsyncIterator[Connector]:
            async with httpx.AsyncClient(timeout=10) as http:
                opened = MyConfig(...).open(http)  # on a fresh namespace (tenant, prefix …) if the peer has one
                yield opened
                await opened.aclose()

        def make_spec(self, n: int) -> AccountSpec:  # optional: valid specs for this workspace
            ...

        def changed_spec(self, spec: AccountSpec) -> AccountSpec:  # optional: a managed change
            ...

``connector`` is function-scoped and yields an opened connector. Each test is isolated by
``self.run_id`` (a fresh hex string per test, set before ``make_spec`` is called): subject ids and the
default specs embed it, and assertions on ``list_accounts`` only look at the accounts the test made,
so the peer may be shared between tests. ``make_spec(n)`` must return the same spec for the same
``n`` within one test and different people (unique ``user_name``) for different ``n``; override the
``spec_factory`` fixture instead if building a spec needs other fixtures. Class attributes:

- ``supports_revoke_sessions = False``: ``revoke_sessions`` must raise ``UnsupportedError``.
- ``allows_duplicate_email = False``: a second person with the same email must be refused with
  ``RejectedError`` (never merged into the first account).
- ``stores_subject_id = False``: the workspace keeps no id of ours, so ``list_accounts`` must report
  ``subject_id=None`` for our accounts too (they are found by ``remote_id``).
- ``has_display_name = False``: the display name is the person's own in the workspace, so a new
  ``display_name`` must change nothing; ``changed_spec`` must then change something the connector
  does manage (by default it only renames).
- ``suspended_accounts_listed = False``: a suspended account must disappear from ``list_accounts``
  (the workspace has no suspension, only removal) and come back, active, with the next ``update``.

Every test runs for every connector; a flag only chooses which of two real outcomes it asserts.

Tests are async through the anyio pytest plugin (asyncio backend).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import ClassVar

import pytest

from connectors.base import (
    AccountRef,
    AccountSpec,
    Connector,
    Outcome,
    RejectedError,
    RemoteAccount,
    Result,
    UnsupportedError,
)

__all__ = ["ConnectorContract", "SpecFactory", "find_account"]

SpecFactory = Callable[[int], AccountSpec]


async def find_account(connector: Connector, *, subject_id: str, remote_id: str | None) -> RemoteAccount | None:
    """The listed account with this subject id or remote id, ``None`` if absent (reads the whole listing)."""
    found: RemoteAccount | None = None
    async for account in connector.list_accounts():
        if account.subject_id == subject_id or (remote_id is not None and account.remote_id == remote_id):
            assert found is None, f"two listed accounts match subject {subject_id!r}: {found} and {account}"
            found = account
    return found


@pytest.mark.anyio
class ConnectorContract:
    """Contract tests; subclasses provide the ``connector`` fixture and may override ``make_spec``."""

    supports_revoke_sessions: ClassVar[bool] = True
    allows_duplicate_email: ClassVar[bool] = True
    stores_subject_id: ClassVar[bool] = True
    has_display_name: ClassVar[bool] = True
    suspended_accounts_listed: ClassVar[bool] = True
    tenant_id: ClassVar[str] = "contract-partner"
    run_id: str

    @pytest.fixture
    def anyio_backend(self) -> str:
        """One backend: the broker runs on asyncio."""
        return "asyncio"

    @pytest.fixture(autouse=True)
    def _fresh_run_id(self) -> None:
        """A fresh id per test so that tests sharing one peer never see each other's accounts."""
        self.run_id = uuid.uuid4().hex[:12]

    @pytest.fixture
    def connector(self) -> Connector:
        """Subclasses yield an opened connector on a fresh namespace."""
        raise NotImplementedError("subclass ConnectorContract and define a `connector` fixture")

    def make_spec(self, n: int) -> AccountSpec:
        """A valid desired state for person ``n`` of this test; override for workspace-specific rules."""
        local = f"c{self.run_id}n{n}"
        return AccountSpec(
            user_name=local,
            email=f"{local}@example.test",
            display_name=f"Contract Person {n}",
            given_name="Contract",
            family_name=f"Person {n}",
        )

    def changed_spec(self, spec: AccountSpec) -> AccountSpec:
        """A new desired state for the same person that the connector manages: by default a new display name."""
        return dataclasses.replace(spec, display_name=f"Renamed {self.run_id}")

    @pytest.fixture
    def spec_factory(self) -> SpecFactory:
        """``make_spec`` as a fixture, so a subclass can build specs from other fixtures instead."""
        return self.make_spec

    async def assert_listed_active(self, connector: Connector, ref: AccountRef) -> None:
        """``ref``'s account is listed once, active, with our subject id where the workspace stores one."""
        listed = await find_account(connector, subject_id=ref.subject_id, remote_id=ref.remote_id)
        assert listed is not None, f"{ref} is not listed"
        subject_id = ref.subject_id if self.stores_subject_id else None
        assert (listed.remote_id, listed.subject_id, listed.active) == (ref.remote_id, subject_id, True)

    def ref(self, n: int, remote_id: str | None = None) -> AccountRef:
        """Person ``n`` of this test as the outbox worker names it (subject id embeds the run id)."""
        return AccountRef(tenant_id=self.tenant_id, subject_id=f"subj-{self.run_id}-{n}", remote_id=remote_id)

    async def _create(self, connector: Connector, spec_factory: SpecFactory, n: int = 1) -> AccountRef:
        """Create person ``n`` and return its ref carrying the remote id, as the worker stores it."""
        result = await connector.update(self.ref(n), spec_factory(n), op_id=f"op-{self.run_id}-create-{n}")
        assert result.outcome is Outcome.CHANGED
        assert result.remote_id
        return self.ref(n, result.remote_id)

    async def test_update_is_idempotent(self, connector: Connector, spec_factory: SpecFactory) -> None:
        """A repeated upsert changes nothing and finds the account by subject id alone."""
        spec = spec_factory(1)
        first = await connector.update(self.ref(1), spec, op_id=f"op-{self.run_id}-1")
        assert first.outcome is Outcome.CHANGED
        assert first.remote_id
        second = await connector.update(self.ref(1), spec, op_id=f"op-{self.run_id}-2")
        assert second == Result(Outcome.UNCHANGED, first.remote_id)
        third = await connector.update(self.ref(1, first.remote_id), spec, op_id=f"op-{self.run_id}-3")
        assert third == Result(Outcome.UNCHANGED, first.remote_id)

    async def test_update_applies_a_changed_spec(self, connector: Connector, spec_factory: SpecFactory) -> None:
        """A new desired state is applied once, then it is already so; an unmanaged display name changes nothing."""
        ref = await self._create(connector, spec_factory)
        changed_spec = self.changed_spec(spec_factory(1))
        assert changed_spec != spec_factory(1), "changed_spec must change the desired state"
        changed = await connector.update(ref, changed_spec, op_id=f"op-{self.run_id}-change")
        assert changed == Result(Outcome.CHANGED, ref.remote_id)
        again = await connector.update(ref, changed_spec, op_id=f"op-{self.run_id}-change-2")
        assert again == Result(Outcome.UNCHANGED, ref.remote_id)
        renamed = dataclasses.replace(changed_spec, display_name=f"Other name {self.run_id}")
        rename = await connector.update(ref, renamed, op_id=f"op-{self.run_id}-rename")
        expected = Outcome.CHANGED if self.has_display_name else Outcome.UNCHANGED
        assert rename == Result(expected, ref.remote_id)

    async def test_account_is_listed_active(self, connector: Connector, spec_factory: SpecFactory) -> None:
        """list_accounts shows our account with our subject id (if the workspace stores one), active."""
        ref = await self._create(connector, spec_factory)
        await self.assert_listed_active(connector, ref)

    async def test_suspend_then_update_reactivates(self, connector: Connector, spec_factory: SpecFactory) -> None:
        """Suspend is idempotent and leaves the account listed inactive (or unlisted); update brings it back."""
        ref = await self._create(connector, spec_factory)
        first = await connector.suspend(ref, op_id=f"op-{self.run_id}-s1")
        assert first.outcome is Outcome.CHANGED
        second = await connector.suspend(ref, op_id=f"op-{self.run_id}-s2")
        assert second.outcome is Outcome.UNCHANGED
        listed = await find_account(connector, subject_id=ref.subject_id, remote_id=ref.remote_id)
        if self.suspended_accounts_listed:
            assert listed is not None and listed.active is False
        else:
            assert listed is None
        back = await connector.update(ref, spec_factory(1), op_id=f"op-{self.run_id}-u")
        assert back == Result(Outcome.CHANGED, ref.remote_id)
        await self.assert_listed_active(connector, ref)

    async def test_revoke_sessions(self, connector: Connector, spec_factory: SpecFactory) -> None:
        """Revoke ends sessions (or is declared unsupported) and never suspends the account."""
        ref = await self._create(connector, spec_factory)
        if not self.supports_revoke_sessions:
            with pytest.raises(UnsupportedError):
                await connector.revoke_sessions(ref, op_id=f"op-{self.run_id}-r")
        else:
            result = await connector.revoke_sessions(ref, op_id=f"op-{self.run_id}-r")
            assert isinstance(result, Result)
            assert result.outcome in (Outcome.CHANGED, Outcome.UNCHANGED)
        await self.assert_listed_active(connector, ref)

    async def test_deprovision_is_idempotent(self, connector: Connector, spec_factory: SpecFactory) -> None:
        """Deprovision removes (or finally deactivates) once, then reports it is already so."""
        ref = await self._create(connector, spec_factory)
        first = await connector.deprovision(ref, op_id=f"op-{self.run_id}-d1")
        assert first.outcome is Outcome.CHANGED
        second = await connector.deprovision(ref, op_id=f"op-{self.run_id}-d2")
        assert second.outcome is Outcome.UNCHANGED
        listed = await find_account(connector, subject_id=ref.subject_id, remote_id=ref.remote_id)
        assert listed is None or listed.active is False

    async def test_absent_account_is_unchanged(self, connector: Connector) -> None:
        """Suspend, revoke and deprovision of an account never created succeed as UNCHANGED."""
        ref = self.ref(9)
        assert (await connector.suspend(ref, op_id=f"op-{self.run_id}-a1")).outcome is Outcome.UNCHANGED
        if self.supports_revoke_sessions:
            assert (await connector.revoke_sessions(ref, op_id=f"op-{self.run_id}-a2")).outcome is Outcome.UNCHANGED
        assert (await connector.deprovision(ref, op_id=f"op-{self.run_id}-a3")).outcome is Outcome.UNCHANGED
        assert await find_account(connector, subject_id=ref.subject_id, remote_id=None) is None

    async def test_email_never_identifies(self, connector: Connector, spec_factory: SpecFactory) -> None:
        """A second person with the first one's email is a separate account (or refused), never a merge."""
        first = await self._create(connector, spec_factory, 1)
        email = spec_factory(1).email
        assert email, "make_spec(1) must set an email for this test"
        twin = dataclasses.replace(spec_factory(2), email=email)
        if self.allows_duplicate_email:
            second = await connector.update(self.ref(2), twin, op_id=f"op-{self.run_id}-twin")
            assert second.outcome is Outcome.CHANGED
            assert second.remote_id and second.remote_id != first.remote_id
            gone = await connector.deprovision(self.ref(2, second.remote_id), op_id=f"op-{self.run_id}-twin-d")
            assert gone.outcome is Outcome.CHANGED
        else:
            with pytest.raises(RejectedError):
                await connector.update(self.ref(2), twin, op_id=f"op-{self.run_id}-twin")
        # the first person was never touched by the second one's update or deprovision
        await self.assert_listed_active(connector, first)
        again = await connector.update(first, spec_factory(1), op_id=f"op-{self.run_id}-first-again")
        assert again == Result(Outcome.UNCHANGED, first.remote_id)
