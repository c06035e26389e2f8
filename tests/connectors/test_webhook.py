"""Standard Webhooks connector: the contract against a real receiver process, plus signing and error mapping.

The receiver (``tests/peers/webhook_receiver.py``) verifies with the reference ``standardwebhooks``
library, so every passing contract test is also an interoperability check of our signatures
(https://www.standardwebhooks.com, "Signature scheme"). Error mapping runs on respx.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
import respx
from pydantic import SecretStr, ValidationError
from standardwebhooks.webhooks import Webhook

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
from connectors.webhook import WebhookConnector, WebhookConnectorConfig, sign
from tests.connectors.conformance import ConnectorContract, find_account
from tests.peers.webhook_receiver import WebhookReceiver, running_webhook_receiver

pytestmark = pytest.mark.peer

HOOK_URL = "https://app.example.test/hooks"
ACCOUNTS_URL = "https://app.example.test/accounts"


def new_secret(size: int = 32) -> str:
    """A fresh ``whsec_`` secret of ``size`` random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode()


def spec(local: str, **changes: object) -> AccountSpec:
    """A valid desired state for ``local``."""
    values: dict[str, object] = {
        "user_name": local,
        "email": f"{local}@example.test",
        "display_name": f"Person {local}",
        "roles": frozenset({"member"}),
        "groups": frozenset({"eng"}),
        "attributes": {"cost_center": "42"},
    }
    values.update(changes)
    return AccountSpec(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookReceiver]:
    """One receiver process for the module; tests are isolated by their own subject ids."""
    with running_webhook_receiver(secret=new_secret(), workdir=tmp_path_factory.mktemp("webhook-receiver")) as peer:
        yield peer


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def open_on(receiver: WebhookReceiver, http: httpx.AsyncClient, *, secret: str | None = None) -> WebhookConnector:
    """A connector to the receiver, with its secret unless another is given."""
    config = WebhookConnectorConfig(
        url=receiver.hooks_url,
        secret=SecretStr(secret or receiver.secret),
        accounts_url=receiver.accounts_url,
    )
    return config.open(http)


class TestWebhookContract(ConnectorContract):
    """The shared contract against the real receiver process (signatures checked by ``standardwebhooks``)."""

    @pytest.fixture
    async def connector(self, receiver: WebhookReceiver, http: httpx.AsyncClient) -> AsyncIterator[Connector]:
        opened = open_on(receiver, http)
        yield opened
        await opened.aclose()


@pytest.mark.anyio
async def test_wrong_secret_is_refused_and_changes_nothing(receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    """A receiver holding another secret answers 401, which pauses the workspace (CredentialsError)."""
    ref = AccountRef("t", f"subj-{secrets.token_hex(6)}")
    with pytest.raises(CredentialsError, match="401"):
        await open_on(receiver, http, secret=new_secret()).update(ref, spec("wrong"), op_id=secrets.token_hex(8))
    assert await find_account(open_on(receiver, http), subject_id=ref.subject_id, remote_id=None) is None


@pytest.mark.anyio
async def test_wrong_secret_cannot_list(receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    """The listing is signed too: another secret gets 401."""
    with pytest.raises(CredentialsError):
        async for _ in open_on(receiver, http, secret=new_secret()).list_accounts():
            pass


def signed_post(receiver: WebhookReceiver, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers our connector would send for ``body`` (signed with our own ``sign``)."""
    key = base64.b64decode(receiver.secret.removeprefix("whsec_"))
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key=key, msg_id=msg_id, timestamp=timestamp, body=body),
        "content-type": "application/json",
    }


def event_body(subject_id: str, display_name: str) -> bytes:
    account: dict[str, object] = {"user_name": "u", "email": None, "display_name": display_name, "given_name": None,
               "family_name": None, "roles": [], "groups": [], "active": True, "attributes": {}}  # fmt: skip
    event = {"type": "account.updated", "timestamp": "2025-01-01T00:00:00Z",
             "data": {"tenant_id": "t", "subject_id": subject_id, "remote_id": None, "account": account}}  # fmt: skip
    return json.dumps(event).encode()


@pytest.mark.anyio
async def test_tampered_body_is_refused(receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    """The signature covers the body: the same headers over an altered body are refused with 401."""
    subject = f"subj-{secrets.token_hex(6)}"
    original = event_body(subject, "Original")
    headers = signed_post(receiver, original, msg_id=f"msg_{secrets.token_hex(8)}")
    tampered = await http.post(receiver.hooks_url, content=event_body(subject, "Mallory"), headers=headers)
    assert tampered.status_code == 401, tampered.text
    assert await find_account(open_on(receiver, http), subject_id=subject, remote_id=None) is None
    genuine = await http.post(receiver.hooks_url, content=original, headers=headers)
    assert genuine.status_code == 200, genuine.text
    assert genuine.json()["outcome"] == "changed"


@pytest.mark.anyio
async def test_stale_timestamp_is_refused(receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    """A correctly signed but ten-minute-old message is refused (replay window of the spec's reference library)."""
    body = event_body(f"subj-{secrets.token_hex(6)}", "Old")
    headers = signed_post(receiver, body, msg_id=f"msg_{secrets.token_hex(8)}", timestamp=int(time.time()) - 600)
    response = await http.post(receiver.hooks_url, content=body, headers=headers)
    assert response.status_code == 401
    assert "too old" in response.text


@pytest.mark.anyio
async def test_replayed_webhook_id_is_unchanged(receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    """op_id is the webhook-id: a redelivery is UNCHANGED and is not applied a second time."""
    connector = open_on(receiver, http)
    ref = AccountRef("t", f"subj-{secrets.token_hex(6)}")
    first = await connector.update(ref, spec("replay"), op_id="op-replay-1")
    assert first.outcome is Outcome.CHANGED and first.remote_id
    replay = await connector.update(ref, spec("replay", display_name="Not applied"), op_id="op-replay-1")
    assert replay == Result(Outcome.UNCHANGED, first.remote_id)
    listed = await find_account(connector, subject_id=ref.subject_id, remote_id=None)
    assert listed is not None and listed.user_name == "replay"
    assert (listed.roles, listed.groups) == (frozenset({"member"}), frozenset({"eng"}))


@pytest.mark.anyio
async def test_listing_crosses_pages(receiver: WebhookReceiver, http: httpx.AsyncClient) -> None:
    """The receiver pages by three; every account made here is found once through the next links."""
    connector = open_on(receiver, http)
    made: dict[str, str] = {}
    for n in range(7):
        ref = AccountRef("t", f"subj-{secrets.token_hex(6)}")
        result = await connector.update(ref, spec(f"page{n}"), op_id=secrets.token_hex(8))
        assert result.remote_id
        made[ref.subject_id] = result.remote_id
    listed = {a.subject_id: a.remote_id async for a in connector.list_accounts() if a.subject_id in made}
    assert listed == made


def test_signature_matches_reference_library() -> None:
    """Our ``sign`` equals ``standardwebhooks.Webhook.sign`` for the same id, time and body."""
    secret = new_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    body = '{"é":"ü"}'.encode()
    ours = sign(key=key, msg_id="msg_1", timestamp=1_700_000_000, body=body)
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(1_700_000_000, tz=UTC), body.decode())
    assert ours == theirs


@pytest.mark.anyio
async def test_request_shape() -> None:
    """One POST per intent: webhook-id = op_id, the spec's envelope, the full desired state, verifiable."""
    secret = new_secret()
    router = respx.MockRouter(assert_all_called=True)
    route = router.post(HOOK_URL).mock(return_value=httpx.Response(200, json={"outcome": "changed", "remote_id": "a1"}))
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
        connector = WebhookConnectorConfig(url=HOOK_URL, secret=SecretStr(secret)).open(http)
        ref = AccountRef("acme", "subj-1", "a1")
        assert await connector.update(ref, spec("alice"), op_id="op-42") == Result(Outcome.CHANGED, "a1")
        for call in (connector.suspend, connector.revoke_sessions, connector.deprovision):
            await call(ref, op_id="op-43")
    requests = [call.request for call in route.calls]
    assert [r.headers["webhook-id"] for r in requests] == ["op-42", "op-43", "op-43", "op-43"]
    events = [Webhook(secret).verify(r.content, dict(r.headers)) for r in requests]
    assert [e["type"] for e in events] == [
        "account.updated",
        "account.suspended",
        "account.sessions_revoked",
        "account.deprovisioned",
    ]
    assert events[0]["data"] == {
        "tenant_id": "acme",
        "subject_id": "subj-1",
        "remote_id": "a1",
        "account": {
            "user_name": "alice",
            "email": "alice@example.test",
            "display_name": "Person alice",
            "given_name": None,
            "family_name": None,
            "roles": ["member"],
            "groups": ["eng"],
            "active": True,
            "attributes": {"cost_center": "42"},
        },
    }
    assert "account" not in events[1]["data"]
    assert requests[0].headers["content-type"] == "application/json"


async def _update_answered(response: httpx.Response | Exception) -> Result:
    router = respx.MockRouter()
    route = router.post(HOOK_URL)
    if isinstance(response, Exception):
        route.mock(side_effect=response)
    else:
        route.mock(return_value=response)
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
        connector = WebhookConnectorConfig(url=HOOK_URL, secret=SecretStr(new_secret())).open(http)
        return await connector.update(AccountRef("t", "s", "r-1"), spec("x"), op_id="op")


@pytest.mark.anyio
async def test_429_retry_after_is_retryable() -> None:
    with pytest.raises(RetryableError) as caught:
        await _update_answered(httpx.Response(429, headers={"Retry-After": "7"}))
    assert caught.value.retry_after == 7.0


@pytest.mark.anyio
async def test_503_is_retryable() -> None:
    with pytest.raises(RetryableError) as caught:
        await _update_answered(httpx.Response(503, text="maintenance"))
    assert caught.value.retry_after is None


@pytest.mark.anyio
@pytest.mark.parametrize("failure", [httpx.ConnectTimeout("slow"), httpx.ReadTimeout("slow"), httpx.ConnectError("no")])
async def test_transport_failures_are_retryable(failure: Exception) -> None:
    with pytest.raises(RetryableError):
        await _update_answered(failure)


@pytest.mark.anyio
async def test_401_is_credentials() -> None:
    with pytest.raises(CredentialsError):
        await _update_answered(httpx.Response(401, json={"error": "signature"}))


@pytest.mark.anyio
async def test_400_is_rejected() -> None:
    with pytest.raises(RejectedError):
        await _update_answered(httpx.Response(400, json={"error": "no such group"}))


@pytest.mark.anyio
async def test_2xx_without_body_is_changed() -> None:
    """The receiver contract: an empty 2xx means CHANGED and the remote id stays what we knew."""
    assert await _update_answered(httpx.Response(204)) == Result(Outcome.CHANGED, "r-1")
    assert await _update_answered(httpx.Response(202, text="")) == Result(Outcome.CHANGED, "r-1")


@pytest.mark.anyio
async def test_unknown_outcome_is_rejected() -> None:
    with pytest.raises(RejectedError, match="unknown outcome"):
        await _update_answered(httpx.Response(200, json={"outcome": "maybe"}))
    with pytest.raises(RejectedError, match="non-JSON"):
        await _update_answered(httpx.Response(200, text="ok"))


@pytest.mark.anyio
async def test_list_accounts_needs_accounts_url() -> None:
    """Without accounts_url the app cannot be reconciled: UnsupportedError, documented."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(respx.MockRouter().async_handler)) as http:
        connector = WebhookConnectorConfig(url=HOOK_URL, secret=SecretStr(new_secret())).open(http)
        with pytest.raises(UnsupportedError, match="accounts_url"):
            async for _ in connector.list_accounts():
                pass


@pytest.mark.anyio
async def test_listing_follows_relative_next_and_refuses_loops() -> None:
    router = respx.MockRouter()
    router.get(ACCOUNTS_URL, params={"page": "2"}).mock(
        return_value=httpx.Response(200, json={"accounts": [{"remote_id": "b", "active": False}], "next": None})
    )
    router.get(ACCOUNTS_URL).mock(
        return_value=httpx.Response(
            200, json={"accounts": [{"remote_id": "a", "subject_id": "s-a"}, {"no": "id"}], "next": "?page=2"}
        )
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
        config = WebhookConnectorConfig(url=HOOK_URL, secret=SecretStr(new_secret()), accounts_url=ACCOUNTS_URL)
        listed = [(a.remote_id, a.subject_id, a.active) async for a in config.open(http).list_accounts()]
    assert listed == [("a", "s-a", True), ("b", None, False)]


@pytest.mark.parametrize(
    "secret",
    [
        "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",  # no whsec_ prefix
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
    ],
)
def test_malformed_secret_fails_at_load(secret: str) -> None:
    """A bad secret is a configuration error at startup, not at the first event."""
    with pytest.raises(ValidationError):
        WebhookConnectorConfig(url=HOOK_URL, secret=SecretStr(secret))
