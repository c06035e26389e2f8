"""The matrix connector against a real Synapse (standards §8.3), plus respx for what Synapse will not do on demand.

The contract suite runs on the session's homeserver; the other peer tests check what a person would
notice: a signed-in client's access token stops working after ``revoke_sessions`` and
``deprovision``, a suspended account is refused but keeps its devices, and room membership follows
``spec.groups``. Error mapping (429 with ``retry_after_ms``, 503, 401, transport errors) uses respx.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
import respx

from connectors.base import (
    AccountRef,
    AccountSpec,
    Connector,
    CredentialsError,
    Outcome,
    RejectedError,
    Result,
    RetryableError,
)
from connectors.matrix import MatrixConnector, MatrixConnectorConfig, canonical_email, localpart_for
from tests.connectors.conformance import ConnectorContract, find_account

if TYPE_CHECKING:  # registered by tests/conftest.py's pytest_plugins; an import here would escape assertion rewriting
    from tests.peers.synapse_process import Synapse

pytestmark = pytest.mark.peer


def _config(synapse: Synapse, **extra: Any) -> MatrixConnectorConfig:
    return MatrixConnectorConfig.model_validate(
        {
            "homeserver_url": synapse.base_url,
            "server_name": synapse.server_name,
            "admin_token": synapse.admin_token,
            **extra,
        }
    )


class TestMatrixContract(ConnectorContract):
    """The shared connector contract on Synapse: one email belongs to one account, so twins are refused."""

    allows_duplicate_email = False

    @pytest.fixture
    async def connector(self, synapse: Synapse) -> AsyncIterator[Connector]:
        """An opened connector on the session's homeserver (tests are isolated by their run id)."""
        async with httpx.AsyncClient(timeout=30.0) as http:
            opened: Connector = _config(synapse).open(http)
            yield opened
            await opened.aclose()


# -- real-peer behaviour -------------------------------------------------------------------------------


@pytest.fixture
async def matrix(synapse: Synapse) -> AsyncIterator[MatrixConnector]:
    """The connector itself (not just the protocol), for tests that look at Synapse afterwards."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        opened = _config(synapse).open(http)
        yield opened
        await opened.aclose()


def _person() -> tuple[AccountRef, AccountSpec]:
    run = uuid.uuid4().hex[:10]
    ref = AccountRef(tenant_id="acme", subject_id=f"sub-{run}")
    spec = AccountSpec(user_name=f"Person.{run}@Acme.test", email=f"Person.{run}@Acme.test", display_name=f"P {run}")
    return ref, spec


async def _provision(matrix: MatrixConnector) -> tuple[AccountRef, AccountSpec, str]:
    ref, spec = _person()
    created = await matrix.update(ref, spec, op_id="op-create")
    assert created.outcome is Outcome.CHANGED and created.remote_id
    return dataclasses.replace(ref, remote_id=created.remote_id), spec, created.remote_id


def _signed_in(synapse: Synapse, user_id: str) -> str:
    """Sign the person in as their client would (a password is set for the test only): an access token."""
    password = uuid.uuid4().hex
    synapse.set_password(user_id, password)
    token = synapse.login_token(user_id, password)
    assert synapse.token_works(token)
    return token


def _errcode(response: httpx.Response) -> str:
    return str(response.json().get("errcode"))


def _devices(synapse: Synapse, user_id: str) -> list[str]:
    response = synapse.admin("GET", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}/devices")
    assert response.status_code == 200, response.text
    return [d["device_id"] for d in response.json()["devices"]]


def _joined(synapse: Synapse, user_id: str) -> set[str]:
    response = synapse.admin("GET", f"/_synapse/admin/v1/users/{quote(user_id, safe='')}/joined_rooms")
    assert response.status_code == 200, response.text
    return set(response.json()["joined_rooms"])


@pytest.mark.anyio
async def test_localpart_comes_from_user_name_and_subject_is_the_sso_mapping(
    synapse: Synapse, matrix: MatrixConnector
) -> None:
    """The account is @<escaped user_name>, carries our subject as an oidc-entente external id and the email."""
    ref, spec, user_id = await _provision(matrix)
    assert user_id == synapse.user_id(localpart_for(spec.user_name))
    assert user_id.startswith("@person.") and "=40acme.test:" in user_id
    body = synapse.admin("GET", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}").json()
    assert body["external_ids"] == [{"auth_provider": "oidc-entente", "external_id": ref.subject_id}]
    assert [(t["medium"], t["address"]) for t in body["threepids"]] == [("email", canonical_email(spec.email or ""))]
    assert body["displayname"] == spec.display_name
    found = synapse.admin("GET", f"/_synapse/admin/v1/auth_providers/oidc-entente/users/{ref.subject_id}")
    assert found.json() == {"user_id": user_id}


@pytest.mark.anyio
async def test_revoke_sessions_invalidates_the_access_token(synapse: Synapse, matrix: MatrixConnector) -> None:
    """Deleting every device kills the client's token (401 M_UNKNOWN_TOKEN); the account stays usable."""
    ref, _, user_id = await _provision(matrix)
    token = _signed_in(synapse, user_id)
    assert await matrix.revoke_sessions(ref, op_id="op-r1") == Result(Outcome.CHANGED, user_id)
    refused = synapse.whoami(token)
    assert (refused.status_code, _errcode(refused)) == (401, "M_UNKNOWN_TOKEN")
    assert _devices(synapse, user_id) == []
    assert await matrix.revoke_sessions(ref, op_id="op-r2") == Result(Outcome.UNCHANGED, user_id)
    listed = await find_account(matrix, subject_id=ref.subject_id, remote_id=user_id)
    assert listed is not None and listed.active


@pytest.mark.anyio
async def test_suspend_locks_sign_in_and_keeps_the_devices(synapse: Synapse, matrix: MatrixConnector) -> None:
    """A locked account's token is refused (M_USER_LOCKED) and it cannot log in; unlocking restores the old session."""
    ref, spec, user_id = await _provision(matrix)
    password = uuid.uuid4().hex
    synapse.set_password(user_id, password)
    token = synapse.login_token(user_id, password)
    devices = _devices(synapse, user_id)
    assert await matrix.suspend(ref, op_id="op-s") == Result(Outcome.CHANGED, user_id)
    refused = synapse.whoami(token)
    assert (refused.status_code, _errcode(refused)) == (401, "M_USER_LOCKED")
    login = synapse.login(user_id, password)
    assert (login.status_code, _errcode(login)) == (401, "M_USER_LOCKED")
    assert _devices(synapse, user_id) == devices  # kept: Synapse's lock does not end sessions, it refuses them
    assert await matrix.update(ref, spec, op_id="op-u") == Result(Outcome.CHANGED, user_id)
    assert synapse.token_works(token)


@pytest.mark.anyio
async def test_deprovision_invalidates_the_access_token_and_update_restores(
    synapse: Synapse, matrix: MatrixConnector
) -> None:
    """Deactivation kills tokens and password login; the SSO mapping survives, so a rejoiner gets the same account."""
    ref, spec, user_id = await _provision(matrix)
    password = uuid.uuid4().hex
    synapse.set_password(user_id, password)
    token = synapse.login_token(user_id, password)
    assert await matrix.deprovision(ref, op_id="op-d1") == Result(Outcome.CHANGED, user_id)
    refused = synapse.whoami(token)
    assert (refused.status_code, _errcode(refused)) == (401, "M_UNKNOWN_TOKEN")
    login = synapse.login(user_id, password)  # deactivation drops the password hash
    assert (login.status_code, _errcode(login)) == (403, "M_FORBIDDEN")
    body = synapse.admin("GET", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}").json()
    assert body["deactivated"] is True and body["threepids"] == [] and body["erased"] is False
    assert await matrix.deprovision(ref, op_id="op-d2") == Result(Outcome.UNCHANGED, user_id)
    assert await matrix.suspend(ref, op_id="op-s") == Result(Outcome.UNCHANGED, user_id)
    assert await matrix.update(ref, spec, op_id="op-back") == Result(Outcome.CHANGED, user_id)
    assert await matrix.update(ref, spec, op_id="op-back-2") == Result(Outcome.UNCHANGED, user_id)
    listed = await find_account(matrix, subject_id=ref.subject_id, remote_id=user_id)
    assert listed is not None and listed.active and listed.email == canonical_email(spec.email or "")


@pytest.mark.anyio
async def test_deprovision_erase(synapse: Synapse) -> None:
    """With ``deprovision_erase`` the account is deactivated and marked erased (GDPR)."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        matrix = _config(synapse, deprovision_erase=True).open(http)
        ref, _, user_id = await _provision(matrix)
        assert await matrix.deprovision(ref, op_id="op-d") == Result(Outcome.CHANGED, user_id)
        assert await matrix.deprovision(ref, op_id="op-d2") == Result(Outcome.UNCHANGED, user_id)
    body = synapse.admin("GET", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}").json()
    assert body["deactivated"] is True and body["erased"] is True


def _create_room(synapse: Synapse, *, public: bool, alias: str | None = None, token: str | None = None) -> str:
    body: dict[str, Any] = {"preset": "public_chat" if public else "private_chat"}
    if alias:
        body["room_alias_name"] = alias
    response = httpx.post(
        f"{synapse.base_url}/_matrix/client/v3/createRoom",
        json=body,
        headers={"Authorization": f"Bearer {token or synapse.admin_token}"},
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["room_id"])


@pytest.mark.anyio
async def test_room_membership_follows_groups(synapse: Synapse, matrix: MatrixConnector) -> None:
    """Granted rooms (alias or id, public or invite-only) are joined; a room no longer granted is left; others kept."""
    alias_name = f"eng-{uuid.uuid4().hex[:8]}"
    public_room = _create_room(synapse, public=True, alias=alias_name)
    private_room = _create_room(synapse, public=False)
    ref, spec = _person()
    granted = dataclasses.replace(spec, groups=frozenset({f"#{alias_name}:{synapse.server_name}", private_room}))

    created = await matrix.update(ref, granted, op_id="op-1")
    user_id = created.remote_id
    assert created.outcome is Outcome.CHANGED and user_id
    assert _joined(synapse, user_id) == {public_room, private_room}
    assert await matrix.update(ref, granted, op_id="op-2") == Result(Outcome.UNCHANGED, user_id)

    own_room = _create_room(synapse, public=False, token=_signed_in(synapse, user_id))  # not managed by Entente
    narrowed = dataclasses.replace(spec, groups=frozenset({private_room}))
    assert await matrix.update(ref, narrowed, op_id="op-3") == Result(Outcome.CHANGED, user_id)
    assert _joined(synapse, user_id) == {private_room, own_room}
    assert await matrix.update(ref, narrowed, op_id="op-4") == Result(Outcome.UNCHANGED, user_id)

    listed = await find_account(matrix, subject_id=ref.subject_id, remote_id=user_id)
    assert listed is not None and listed.groups == frozenset({private_room, own_room})

    regranted = await matrix.update(ref, granted, op_id="op-5")  # a kicked member is invited back to the private room
    assert regranted == Result(Outcome.CHANGED, user_id)
    assert _joined(synapse, user_id) == {public_room, private_room, own_room}


@pytest.mark.anyio
async def test_unknown_room_alias_is_rejected(synapse: Synapse, matrix: MatrixConnector) -> None:
    """A granted alias that does not exist is a configuration error, not something to retry."""
    ref, spec = _person()
    missing = dataclasses.replace(spec, groups=frozenset({f"#nowhere-{uuid.uuid4().hex[:8]}:{synapse.server_name}"}))
    with pytest.raises(RejectedError, match="does not exist"):
        await matrix.update(ref, missing, op_id="op-1")


@pytest.mark.anyio
async def test_existing_localpart_is_never_adopted(synapse: Synapse, matrix: MatrixConnector) -> None:
    """An account with the derived localpart but not our mapping is refused and left untouched; it lists as foreign."""
    ref, spec = _person()
    user_id = synapse.user_id(localpart_for(spec.user_name))
    made = synapse.admin("PUT", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}", json={"displayname": "Someone"})
    assert made.status_code == 201, made.text
    with pytest.raises(RejectedError, match="refusing to adopt"):
        await matrix.update(ref, spec, op_id="op-1")
    body = synapse.admin("GET", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}").json()
    assert body["external_ids"] == [] and body["displayname"] == "Someone"
    listed = await find_account(matrix, subject_id=ref.subject_id, remote_id=user_id)
    assert listed is not None and listed.subject_id is None and listed.active


@pytest.mark.anyio
async def test_inactive_spec_locks(synapse: Synapse, matrix: MatrixConnector) -> None:
    """``spec.active = False`` is the locked state; the repeat is UNCHANGED."""
    ref, spec, user_id = await _provision(matrix)
    inactive = dataclasses.replace(spec, active=False)
    assert await matrix.update(ref, inactive, op_id="op-1") == Result(Outcome.CHANGED, user_id)
    assert await matrix.update(ref, inactive, op_id="op-2") == Result(Outcome.UNCHANGED, user_id)
    assert await matrix.suspend(ref, op_id="op-3") == Result(Outcome.UNCHANGED, user_id)


@pytest.mark.anyio
async def test_list_accounts_pages_through_every_user(synapse: Synapse) -> None:
    """Small pages still list every user exactly once, foreign, locked and deactivated ones included."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        matrix = _config(synapse, page_size=2).open(http)
        ref, _, user_id = await _provision(matrix)
        gone, _, gone_id = await _provision(matrix)
        await matrix.deprovision(gone, op_id="op-d")
        listed = [account async for account in matrix.list_accounts()]
    everyone = synapse.admin("GET", "/_synapse/admin/v2/users?deactivated=true&locked=true&limit=1").json()["total"]
    ids = [account.remote_id for account in listed]
    assert len(ids) == len(set(ids)) == everyone
    by_id = {account.remote_id: account for account in listed}
    assert by_id[synapse.admin_user_id].subject_id is None
    assert (by_id[user_id].subject_id, by_id[user_id].active) == (ref.subject_id, True)
    assert (by_id[gone_id].subject_id, by_id[gone_id].active) == (gone.subject_id, False)


# -- localpart derivation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_name", "options", "localpart"),
    [
        ("alice", {}, "alice"),
        ("Alice@Acme.COM", {}, "alice=40acme.com"),
        ("Alice@Acme.COM", {"drop_domain": True}, "alice"),
        ("a=b", {}, "a=3db"),
        ("a+b/c d", {}, "a=2bb=2fc=20d"),
        ("_svc", {}, "=5fsvc"),
        ("12345", {}, "=312345"),
        ("jörg", {}, "j=c3=b6rg"),
        ("bob", {"prefix": "acme."}, "acme.bob"),
    ],
)
def test_localpart_for(user_name: str, options: dict[str, Any], localpart: str) -> None:
    """Matrix appendix "Mapping from other character sets": lower-cased, '=xx' escapes, reserved starts escaped."""
    assert localpart_for(user_name, **options) == localpart


def test_localpart_for_long_names_fit_a_user_id() -> None:
    """A name longer than a user id allows is cut and made unique again by a hash of the full name."""
    first = localpart_for("x" * 300 + "1", server_name="localhost")
    second = localpart_for("x" * 300 + "2", server_name="localhost")
    assert first != second
    assert len(f"@{first}:localhost") <= 255


def test_localpart_for_empty_is_rejected() -> None:
    with pytest.raises(RejectedError):
        localpart_for("  ")


def test_config_refuses_a_bad_prefix() -> None:
    """A prefix outside the localpart grammar fails at load, not at the first provisioning."""
    with pytest.raises(ValueError, match="localpart_prefix"):
        MatrixConnectorConfig.model_validate(
            {"homeserver_url": "http://hs.test", "server_name": "hs.test", "admin_token": "t", "localpart_prefix": "A:"}
        )


# -- error mapping (respx) -----------------------------------------------------------------------------

HS = "http://synapse.test"
LOOKUP = f"{HS}/_synapse/admin/v1/auth_providers/oidc-entente/users/sub-1"
REF = AccountRef(tenant_id="acme", subject_id="sub-1")


@pytest.fixture
async def mocked() -> AsyncIterator[tuple[respx.MockRouter, MatrixConnector]]:
    """A connector on a respx-mocked homeserver; every route must be declared by the test."""
    config = MatrixConnectorConfig.model_validate(
        {"homeserver_url": HS, "server_name": "hs.test", "admin_token": "tok"}
    )
    with respx.mock(assert_all_called=True) as router:
        async with httpx.AsyncClient(timeout=5.0) as http:
            yield router, config.open(http)


@pytest.mark.anyio
async def test_429_uses_retry_after_ms(mocked: tuple[respx.MockRouter, MatrixConnector]) -> None:
    """Synapse's M_LIMIT_EXCEEDED carries the wait in ``retry_after_ms``."""
    router, matrix = mocked
    router.get(LOOKUP).respond(429, json={"errcode": "M_LIMIT_EXCEEDED", "error": "Too many", "retry_after_ms": 2500})
    with pytest.raises(RetryableError) as caught:
        await matrix.suspend(REF, op_id="op")
    assert caught.value.retry_after == 2.5


@pytest.mark.anyio
async def test_429_takes_the_longer_of_header_and_body(mocked: tuple[respx.MockRouter, MatrixConnector]) -> None:
    router, matrix = mocked
    router.get(LOOKUP).respond(
        429, headers={"Retry-After": "7"}, json={"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 2000}
    )
    with pytest.raises(RetryableError) as caught:
        await matrix.revoke_sessions(REF, op_id="op")
    assert caught.value.retry_after == 7.0


@pytest.mark.anyio
async def test_503_is_retryable(mocked: tuple[respx.MockRouter, MatrixConnector]) -> None:
    router, matrix = mocked
    router.get(LOOKUP).respond(503, text="upstream unavailable")
    with pytest.raises(RetryableError) as caught:
        await matrix.deprovision(REF, op_id="op")
    assert caught.value.retry_after is None


@pytest.mark.anyio
async def test_401_is_a_credentials_error(mocked: tuple[respx.MockRouter, MatrixConnector]) -> None:
    """A revoked admin token pauses the workspace rather than dead-lettering every task."""
    router, matrix = mocked
    route = router.get(LOOKUP).respond(401, json={"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token"})
    with pytest.raises(CredentialsError):
        await matrix.suspend(REF, op_id="op")
    assert route.calls.last.request.headers["Authorization"] == "Bearer tok"


@pytest.mark.anyio
async def test_403_not_admin_is_a_credentials_error(mocked: tuple[respx.MockRouter, MatrixConnector]) -> None:
    router, matrix = mocked
    router.get(LOOKUP).respond(403, json={"errcode": "M_FORBIDDEN", "error": "You are not a server admin"})
    with pytest.raises(CredentialsError):
        await matrix.suspend(REF, op_id="op")


@pytest.mark.anyio
async def test_transport_errors_are_retryable(mocked: tuple[respx.MockRouter, MatrixConnector]) -> None:
    router, matrix = mocked
    router.get(LOOKUP).mock(side_effect=[httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
    for _ in range(2):
        with pytest.raises(RetryableError):
            await matrix.suspend(REF, op_id="op")


@pytest.mark.anyio
async def test_unknown_endpoint_is_rejected_not_absent(mocked: tuple[respx.MockRouter, MatrixConnector]) -> None:
    """A 404 ``M_UNRECOGNIZED`` (wrong URL, admin API not exposed) is no "absent account"."""
    router, matrix = mocked
    router.get(LOOKUP).respond(404, json={"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
    with pytest.raises(RejectedError):
        await matrix.deprovision(REF, op_id="op")


@pytest.mark.anyio
async def test_room_power_refusal_is_rejected(mocked: tuple[respx.MockRouter, MatrixConnector]) -> None:
    """A 403 on a join is the room's power levels refusing the admin: dead-letter the task, do not pause."""
    router, matrix = mocked
    user_id = "@bob:hs.test"
    router.get(LOOKUP).respond(200, json={"user_id": user_id})
    user = {
        "name": user_id,
        "displayname": "Bob",
        "threepids": [],
        "external_ids": [{"auth_provider": "oidc-entente", "external_id": "sub-1"}],
        "deactivated": False,
        "locked": False,
    }
    router.get(f"{HS}/_synapse/admin/v2/users/{quote(user_id, safe='')}").respond(200, json=user)
    router.get(f"{HS}/_synapse/admin/v1/users/{quote(user_id, safe='')}/joined_rooms").respond(
        200, json={"joined_rooms": [], "total": 0}
    )
    router.post(f"{HS}/_synapse/admin/v1/join/{quote('!r:hs.test', safe='')}").respond(
        403, json={"errcode": "M_FORBIDDEN", "error": "You don't have permission to invite users"}
    )
    spec = AccountSpec(user_name="bob", email=None, display_name="Bob", groups=frozenset({"!r:hs.test"}))
    with pytest.raises(RejectedError, match="power levels"):
        await matrix.update(REF, spec, op_id="op")
