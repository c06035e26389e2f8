"""connectors/http.py: the one request path every HTTP connector shares, on an in-process transport."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import ConnectorError, CredentialsError, RejectedError, RetryableError
from connectors.http import HttpApi, bearer, transport_error

BASE = "https://app.example/api"


def recording(json_media_type: str | None = None) -> tuple[HttpApi, list[httpx.Request]]:
    """An API with an Accept and a bearer header whose transport records each request and answers 200 ``{}``."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    headers = {"Accept": "application/json", **bearer(SecretStr("t0k"))}
    return HttpApi(http, BASE + "/", headers=headers, json_media_type=json_media_type), seen


def answering(response: httpx.Response) -> HttpApi:
    """An API whose every request gets ``response``."""
    return HttpApi(httpx.AsyncClient(transport=httpx.MockTransport(lambda _: response)), BASE)


def raising(exc: Exception) -> HttpApi:
    """An API whose every request fails with ``exc`` before any answer."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    return HttpApi(httpx.AsyncClient(transport=httpx.MockTransport(fail)), BASE)


def test_bearer_header() -> None:
    assert bearer(SecretStr("s3cret")) == {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("exc", "error", "detail"),
    [
        (httpx.ConnectTimeout("slow"), RetryableError, "doing x: timed out (ConnectTimeout: slow)"),
        (httpx.ReadTimeout(""), RetryableError, "doing x: timed out (ReadTimeout)"),
        (httpx.ConnectError("refused"), RetryableError, "doing x: ConnectError: refused"),
        (httpx.RemoteProtocolError("reset"), RetryableError, "doing x: RemoteProtocolError: reset"),
        (httpx.UnsupportedProtocol("ftp"), RejectedError, "doing x: UnsupportedProtocol: ftp"),
    ],
)
def test_transport_error(exc: httpx.TransportError, error: type[ConnectorError], detail: str) -> None:
    """No answer: retryable, except a URL scheme no client can reach (no retry helps)."""
    mapped = transport_error(exc, doing="doing x")
    assert type(mapped) is error
    assert mapped.detail == detail


def test_url_joins_paths_and_keeps_absolute_urls() -> None:
    api, _ = recording()
    assert api.url("/Users") == f"{BASE}/Users"
    assert api.url("https://other.example/next?page=2") == "https://other.example/next?page=2"


@pytest.mark.anyio
async def test_send_carries_headers_params_and_json() -> None:
    """Fixed headers on every call, per-call headers merged case-insensitively, the JSON media type replaced."""
    api, seen = recording("application/scim+json")
    await api.send("PATCH", "/Users/1", doing="d", params={"count": 2}, json={"a": 1}, headers={"accept": "*/*"})
    await api.send("GET", "/Users", doing="d")
    patch, get = seen
    assert str(patch.url) == f"{BASE}/Users/1?count=2"
    assert patch.headers.get_list("Accept") == ["*/*"]
    assert (patch.headers["Authorization"], patch.headers["Content-Type"]) == ("Bearer t0k", "application/scim+json")
    assert json.loads(patch.content) == {"a": 1}
    assert "Content-Type" not in get.headers and get.headers["Accept"] == "application/json"


@pytest.mark.anyio
async def test_send_exact_content() -> None:
    api, seen = recording()
    await api.send("POST", "https://hook.example/in", doing="d", content=b'{"x":1}', headers={"content-type": "x/y"})
    assert (seen[0].content, seen[0].headers["content-type"]) == (b'{"x":1}', "x/y")


@pytest.mark.anyio
async def test_missing_ok_only_for_404() -> None:
    assert await answering(httpx.Response(404)).send("GET", "/Users/1", doing="d", missing_ok=True) is None
    with pytest.raises(RejectedError, match="HTTP 404"):
        await answering(httpx.Response(404)).send("GET", "/Users/1", doing="d")
    with pytest.raises(RejectedError, match="HTTP 410"):
        await answering(httpx.Response(410)).send("GET", "/Users/1", doing="d", missing_ok=True)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error"), [(401, CredentialsError), (403, CredentialsError), (409, RejectedError), (503, RetryableError)]
)
async def test_send_classifies_failed_answers(status: int, error: type[ConnectorError]) -> None:
    with pytest.raises(error, match=f"doing: HTTP {status}"):
        await answering(httpx.Response(status)).send("GET", "/x", doing="doing")


@pytest.mark.anyio
async def test_request_returns_any_status_and_maps_transport_errors() -> None:
    """``request`` leaves the status to the caller (e.g. Slack's Web API) but still maps a missing answer."""
    assert (await answering(httpx.Response(500)).request("GET", "/x", doing="d")).status_code == 500
    with pytest.raises(RetryableError, match="timed out"):
        await raising(httpx.ReadTimeout("slow")).request("GET", "/x", doing="d")


@pytest.mark.anyio
async def test_vendor_classifier() -> None:
    def teapot(response: httpx.Response, *, doing: str) -> ConnectorError:
        return RetryableError(f"{doing}: vendor says {response.status_code}", retry_after=7)

    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(418)))
    with pytest.raises(RetryableError, match="vendor says 418") as caught:
        await HttpApi(http, BASE, classify=teapot).send("GET", "/x", doing="d")
    assert caught.value.retry_after == 7
