"""The SCIM connector (RFC 7644) against a real scim2-server, plus respx failure injection.

The peer is one scim2-server process for this module, started with ``--dynamic-tenants`` so every test
provisions into a fresh tenant (``/<tenant>/v2``) and never sees another test's Users or Groups.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

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
    UnsupportedError,
)
from connectors.scim import ScimConnector, ScimConnectorConfig
from tests.connectors.conformance import ConnectorContract
from tests.peers.entente_process import START_TIMEOUT, free_port, stop_process
from tests.peers.scim2_server_process import SCIM2_SERVER

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


@dataclass(frozen=True)
class Scim2Tenants:
    """A scim2-server that makes a tenant on first use: ``tenant_url(name)`` is its SCIM base URL."""

    root: str
    token: str

    def tenant_url(self, name: str) -> str:
        return f"{self.root}/{name}/v2"

    def fresh(self) -> str:
        """The base URL of a tenant nobody has used."""
        return self.tenant_url(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def scim2_tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scim2Tenants]:
    """scim2-server --dynamic-tenants on a free loopback port; fails (never skips) if it does not come up."""
    port = free_port()
    token = secrets.token_hex(24)
    log_path = tmp_path_factory.mktemp("scim2-tenants") / "scim2-server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(SCIM2_SERVER), "--port", str(port), "--bearer-token", token, "--dynamic-tenants"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    peer = Scim2Tenants(root=f"http://127.0.0.1:{port}", token=token)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"scim2-server exited with {process.returncode}\n{log_path.read_text(errors='replace')}")
            try:
                probe = httpx.get(
                    f"{peer.tenant_url('ready')}/ServiceProviderConfig",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=1.0,
                )
                if probe.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"scim2-server did not answer\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield peer
    finally:
        died = stop_process(process)
    assert died is None, f"scim2-server died during the tests\n{log_path.read_text(errors='replace')}"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The caller-owned client the connector borrows."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


def as_connector(opened: ScimConnector) -> Connector:
    """Never called: mypy checks here that ScimConnector satisfies the Connector protocol."""
    return opened


def config_for(base_url: str, token: str, **extra: Any) -> ScimConnectorConfig:
    return ScimConnectorConfig.model_validate({"base_url": base_url, "token": token, **extra})


class TestScimContract(ConnectorContract):
    """The shared contract on scim2-server with the defaults: PATCH updates, DELETE on deprovision."""

    supports_revoke_sessions = False

    @pytest.fixture
    async def connector(self, scim2_tenants: Scim2Tenants, http: httpx.AsyncClient) -> AsyncIterator[ScimConnector]:
        opened = config_for(scim2_tenants.fresh(), scim2_tenants.token).open(http)
        yield opened
        await opened.aclose()


class TestScimPutDeactivateContract(ConnectorContract):
    """The shared contract for PATCH-less, DELETE-less workspaces: read-modify-write PUT, deactivate."""

    supports_revoke_sessions = False

    @pytest.fixture
    async def connector(self, scim2_tenants: Scim2Tenants, http: httpx.AsyncClient) -> AsyncIterator[ScimConnector]:
        config = config_for(scim2_tenants.fresh(), scim2_tenants.token, user_update="put", deprovision="deactivate")
        opened = config.open(http)
        yield opened
        await opened.aclose()


# --- SCIM-specific behaviour on the real peer ----------------------------------------------------


@dataclass
class Workspace:
    """One fresh scim2-server tenant, seen both through the connector and through raw HTTP."""

    base_url: str
    http: httpx.AsyncClient
    headers: dict[str, str]

    def connector(self, **extra: Any) -> ScimConnector:
        return config_for(self.base_url, self.headers["Authorization"].removeprefix("Bearer "), **extra).open(self.http)

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.http.get(f"{self.base_url}{path}", params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(f"{self.base_url}{path}", json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def workspace(scim2_tenants: Scim2Tenants, http: httpx.AsyncClient) -> Workspace:
    return Workspace(scim2_tenants.fresh(), http, {"Authorization": f"Bearer {scim2_tenants.token}"})


def spec(name: str, **extra: Any) -> AccountSpec:
    return AccountSpec(**{"user_name": name, "email": f"{name}@example.test", "display_name": name.title(), **extra})


def ref(subject: str, remote_id: str | None = None) -> AccountRef:
    return AccountRef(tenant_id="acme", subject_id=subject, remote_id=remote_id)


@pytest.mark.anyio
async def test_create_sends_rfc7643_user_with_external_id(workspace: Workspace) -> None:
    """RFC 7643 §4.1: the created User carries our subject id as externalId and the spec's attributes."""
    connector = workspace.connector()
    result = await connector.update(
        ref("s-1"), spec("ada", given_name="Ada", family_name="Lovelace", roles=frozenset({"member"})), op_id="1"
    )
    user = await workspace.get(f"/Users/{result.remote_id}")
    assert user["externalId"] == "s-1"
    assert (user["userName"], user["displayName"], user["active"]) == ("ada", "Ada", True)
    assert user["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert user["emails"] == [{"value": "ada@example.test", "type": "work", "primary": True}]
    assert user["roles"] == [{"value": "member"}]


@pytest.mark.anyio
async def test_never_adopts_an_account_by_email_or_user_name(workspace: Workspace) -> None:
    """Someone else's User with our email is left alone; a userName clash is refused, not merged (RFC 7644 §3.3)."""
    other = await workspace.post(
        "/Users",
        {
            "schemas": [USER_SCHEMA],
            "userName": "someone",
            "externalId": "not-ours",
            "emails": [{"value": "ada@example.test"}],
        },
    )
    connector = workspace.connector()
    mine = await connector.update(ref("s-1"), spec("ada"), op_id="1")
    assert mine.outcome is Outcome.CHANGED and mine.remote_id != other["id"]
    with pytest.raises(RejectedError, match="409"):
        await connector.update(ref("s-2"), spec("someone"), op_id="2")
    assert (await connector.deprovision(ref("s-2"), op_id="3")).outcome is Outcome.UNCHANGED
    untouched = await workspace.get(f"/Users/{other['id']}")
    assert (untouched["userName"], untouched["externalId"], untouched["meta"]["version"]) == (
        "someone",
        "not-ours",
        other["meta"]["version"],
    )


@pytest.mark.anyio
async def test_stale_remote_id_of_another_account_is_ignored(workspace: Workspace) -> None:
    """A remote id now naming a User with another externalId is not ours: lookup falls back to externalId."""
    other = await workspace.post("/Users", {"schemas": [USER_SCHEMA], "userName": "bob", "externalId": "s-bob"})
    connector = workspace.connector()
    assert (await connector.suspend(ref("s-1", other["id"]), op_id="1")).outcome is Outcome.UNCHANGED
    assert (await connector.deprovision(ref("s-1", other["id"]), op_id="2")).outcome is Outcome.UNCHANGED
    assert (await workspace.get(f"/Users/{other['id']}"))["meta"]["version"] == other["meta"]["version"]


@pytest.mark.anyio
async def test_groups_are_joined_created_and_left_when_managed(workspace: Workspace) -> None:
    """RFC 7644 §3.5.2: spec groups are joined (created if missing); managed groups not granted are left."""
    await workspace.post("/Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "eng"})
    connector = workspace.connector(managed_groups=["ops"])
    granted = spec("ada", groups=frozenset({"eng", "ops"}))
    first = await connector.update(ref("s-1"), granted, op_id="1")
    assert first.outcome is Outcome.CHANGED
    assert (await connector.update(ref("s-1"), granted, op_id="2")) == Result(Outcome.UNCHANGED, first.remote_id)

    async def member_of() -> set[str]:
        page = await workspace.get("/Groups", filter=f'members.value eq "{first.remote_id}"')
        return {group["displayName"] for group in page["Resources"]}

    assert await member_of() == {"eng", "ops"}
    assert (await workspace.get("/Groups"))["totalResults"] == 2  # "eng" reused, only "ops" created
    fewer = spec("ada", groups=frozenset({"eng"}))
    assert (await connector.update(ref("s-1"), fewer, op_id="3")).outcome is Outcome.CHANGED
    assert await member_of() == {"eng"}
    assert (await connector.update(ref("s-1"), fewer, op_id="4")).outcome is Outcome.UNCHANGED
    # "eng" is not managed: an empty grant leaves it alone
    assert (await connector.update(ref("s-1"), spec("ada"), op_id="5")).outcome is Outcome.UNCHANGED
    assert await member_of() == {"eng"}


@pytest.mark.anyio
async def test_missing_group_without_create_is_rejected(workspace: Workspace) -> None:
    """With create_groups off a Group we cannot find is a configuration problem, not a retry."""
    connector = workspace.connector(create_groups=False)
    with pytest.raises(RejectedError, match="no Group"):
        await connector.update(ref("s-1"), spec("ada", groups=frozenset({"nope"})), op_id="1")


@pytest.mark.anyio
async def test_put_keeps_attributes_we_do_not_manage(workspace: Workspace) -> None:
    """RFC 7644 §3.5.1 PUT replaces everything, so the connector writes back what the workspace had."""
    connector = workspace.connector(user_update="put")
    created = await connector.update(ref("s-1"), spec("ada"), op_id="1")
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "title", "value": "Engineer"}],
    }
    response = await workspace.http.patch(
        f"{workspace.base_url}/Users/{created.remote_id}", json=patch, headers=workspace.headers
    )
    assert response.status_code in (200, 204), response.text
    renamed = spec("ada", display_name="Countess")
    assert (await connector.update(ref("s-1"), renamed, op_id="2")).outcome is Outcome.CHANGED
    user = await workspace.get(f"/Users/{created.remote_id}")
    assert (user["displayName"], user["title"], user["externalId"]) == ("Countess", "Engineer", "s-1")


@pytest.mark.anyio
async def test_list_accounts_pages_through_every_user(workspace: Workspace) -> None:
    """RFC 7644 §3.4.2.4: startIndex/count pages are followed to totalResults, each User once."""
    connector = workspace.connector(page_size=2)
    made = {(await connector.update(ref(f"s-{n}"), spec(f"user{n}"), op_id=str(n))).remote_id for n in range(5)}
    listed = [account async for account in connector.list_accounts()]
    assert {account.remote_id for account in listed} == made
    assert len(listed) == 5
    assert {account.subject_id for account in listed} == {f"s-{n}" for n in range(5)}
    assert {account.email for account in listed} == {f"user{n}@example.test" for n in range(5)}


@pytest.mark.anyio
async def test_revoke_sessions_is_unsupported(workspace: Workspace) -> None:
    """RFC 7644 has no session API: the engine must apply the policy fallback."""
    with pytest.raises(UnsupportedError):
        await workspace.connector().revoke_sessions(ref("s-1"), op_id="1")


@pytest.mark.anyio
async def test_wrong_token_is_a_credentials_error(workspace: Workspace) -> None:
    """A real 401 from the peer pauses the workspace rather than retrying."""
    connector = config_for(workspace.base_url, "wrong").open(workspace.http)
    with pytest.raises(CredentialsError, match="401"):
        await connector.update(ref("s-1"), spec("ada"), op_id="1")


def test_config_validates_and_hides_the_token() -> None:
    """Typed config: bad values fail at load; the secret never shows in repr."""
    config = config_for("https://app.example/scim/v2/", "s3cret")
    assert config.kind == "scim" and "s3cret" not in repr(config)
    with pytest.raises(ValueError, match="deprovision"):
        config_for("https://app.example/scim/v2", "t", deprovision="archive")
    with pytest.raises(ValueError, match="extra"):
        config_for("https://app.example/scim/v2", "t", tokne="t")


def test_kind_is_a_class_constant_and_stored_kind_is_accepted() -> None:
    """``kind`` is no field (never dumped); configs sealed while it was one still load; another kind is refused."""
    values = {"base_url": "https://app.example/scim/v2", "token": "t"}
    assert "kind" not in ScimConnectorConfig.model_validate(values).model_dump(mode="json")
    legacy = ScimConnectorConfig.model_validate({**values, "kind": "scim"})
    assert legacy == ScimConnectorConfig.model_validate(values) and legacy.kind == ScimConnector.kind == "scim"
    with pytest.raises(ValueError, match="extra"):
        ScimConnectorConfig.model_validate({**values, "kind": "slack"})


# --- failure injection with respx --------------------------------------------------------------------

BASE = "https://app.example/scim/v2"


@pytest.fixture
async def mocked() -> AsyncIterator[tuple[respx.MockRouter, ScimConnector]]:
    """A connector on a respx-mocked workspace; every route a test declares must be called."""
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        async with httpx.AsyncClient(timeout=5.0) as client:
            yield router, config_for(BASE, "tok").open(client)


def list_response(*users: dict[str, Any]) -> httpx.Response:
    body = {"schemas": [LIST_SCHEMA], "totalResults": len(users), "startIndex": 1, "Resources": list(users)}
    return httpx.Response(200, json=body)


@pytest.mark.anyio
async def test_429_is_retryable_with_retry_after(mocked: tuple[respx.MockRouter, ScimConnector]) -> None:
    router, connector = mocked
    router.get("/Users").mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))
    with pytest.raises(RetryableError) as caught:
        await connector.update(ref("s-1"), spec("ada"), op_id="1")
    assert caught.value.retry_after == 7.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, RetryableError),
        (500, RetryableError),
        (401, CredentialsError),
        (403, CredentialsError),
        (400, RejectedError),
    ],
)
async def test_status_is_classified(
    mocked: tuple[respx.MockRouter, ScimConnector], status: int, error: type[Exception]
) -> None:
    router, connector = mocked
    router.get("/Users").mock(return_value=httpx.Response(status, json={"detail": "no"}))
    with pytest.raises(error, match=str(status)):
        await connector.suspend(ref("s-1"), op_id="1")


@pytest.mark.anyio
async def test_rejected_create_is_rejected(mocked: tuple[respx.MockRouter, ScimConnector]) -> None:
    """A 400 on POST (e.g. invalidValue) will fail every retry."""
    router, connector = mocked
    router.get("/Users").mock(return_value=list_response())
    router.post("/Users").mock(return_value=httpx.Response(400, json={"scimType": "invalidValue"}))
    with pytest.raises(RejectedError, match="invalidValue"):
        await connector.update(ref("s-1"), spec("ada"), op_id="1")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow")]
)
async def test_transport_failure_is_retryable(
    mocked: tuple[respx.MockRouter, ScimConnector], failure: httpx.TransportError
) -> None:
    router, connector = mocked
    router.get("/Users").mock(side_effect=failure)
    with pytest.raises(RetryableError) as caught:
        await connector.deprovision(ref("s-1"), op_id="1")
    assert caught.value.retry_after is None


@pytest.mark.anyio
async def test_non_scim_answer_is_rejected(mocked: tuple[respx.MockRouter, ScimConnector]) -> None:
    """A 200 that is not JSON (a login page, a proxy) is a configuration problem."""
    router, connector = mocked
    router.get("/Users").mock(return_value=httpx.Response(200, text="<html>sign in</html>"))
    with pytest.raises(RejectedError, match="not JSON"):
        _ = [account async for account in connector.list_accounts()]


@pytest.mark.anyio
async def test_two_users_with_our_external_id_are_rejected(mocked: tuple[respx.MockRouter, ScimConnector]) -> None:
    """An ambiguous externalId is never resolved by guessing."""
    router, connector = mocked
    router.get("/Users").mock(
        return_value=list_response({"id": "a", "externalId": "s-1"}, {"id": "b", "externalId": "s-1"})
    )
    with pytest.raises(RejectedError, match="2 Users"):
        await connector.suspend(ref("s-1"), op_id="1")


@pytest.mark.anyio
async def test_filter_ignoring_workspace_cannot_make_us_adopt(mocked: tuple[respx.MockRouter, ScimConnector]) -> None:
    """Filter results are re-checked: another person's User returned by a sloppy filter is not ours."""
    router, connector = mocked
    router.get("/Users").mock(return_value=list_response({"id": "x", "userName": "ada", "externalId": "other"}))
    assert await connector.deprovision(ref("s-1"), op_id="1") == Result(Outcome.UNCHANGED, None)


@pytest.mark.anyio
async def test_requests_carry_bearer_scim_media_type_and_filter(
    mocked: tuple[respx.MockRouter, ScimConnector],
) -> None:
    """RFC 7644 §3.4.2.2 filter with a JSON-quoted value, §8.1 media type, bearer auth."""
    router, connector = mocked
    lookup = router.get("/Users").mock(return_value=list_response())
    create = router.post("/Users").mock(return_value=httpx.Response(201, json={"id": "new", "externalId": 's"1'}))
    assert await connector.update(ref('s"1'), spec("ada"), op_id="1") == Result(Outcome.CHANGED, "new")
    assert lookup.calls.last.request.url.params["filter"] == 'externalId eq "s\\"1"'
    sent = create.calls.last.request
    assert sent.headers["Authorization"] == "Bearer tok"
    assert sent.headers["Content-Type"] == "application/scim+json"


@pytest.mark.anyio
async def test_delete_racing_to_404_is_unchanged(mocked: tuple[respx.MockRouter, ScimConnector]) -> None:
    """RFC 7644 §3.6: a User already gone when DELETE arrives is already so."""
    router, connector = mocked
    router.get("/Users/u1").mock(return_value=httpx.Response(200, json={"id": "u1", "externalId": "s-1"}))
    router.delete("/Users/u1").mock(return_value=httpx.Response(404, json={"status": "404"}))
    assert await connector.deprovision(ref("s-1", "u1"), op_id="1") == Result(Outcome.UNCHANGED, None)
