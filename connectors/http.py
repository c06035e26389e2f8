"""Shared ``httpx.AsyncClient`` helpers for HTTP connectors: auth headers, one request, error mapping; no retries.

The client, its timeouts and its pool are the caller's (``ConnectorConfig.open(http)``). ``HttpApi`` only
fixes what every request to one workspace API repeats (base URL, auth and media-type headers, how a
failed answer maps to the exception tree), so that all connectors classify failures alike:

- ``httpx.TransportError`` → ``transport_error``: timeouts are ``RetryableError`` "timed out (…)",
  refused or reset connections and protocol errors ``RetryableError`` by name, and
  ``httpx.UnsupportedProtocol`` (a URL whose scheme no client can reach, e.g. a workspace's bad
  ``next`` link) ``RejectedError``, because no retry can help;
- a non-2xx answer → the API's ``classify`` (``connectors.base.error_for_response`` unless the
  connector has a vendor mapping), except a 404 the caller declares as "absent" with ``missing_ok``.

Nothing here retries, sleeps or keeps state between calls: the outbox worker owns retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol, TypedDict, Unpack, overload

import httpx
from pydantic import SecretStr

from connectors.base import ConnectorError, RejectedError, RetryableError, error_for_response

__all__ = ["Classifier", "HttpApi", "RequestOptions", "bearer", "transport_error"]


class RequestOptions(TypedDict, total=False):
    """What one request may add to the API's fixed parts."""

    params: Mapping[str, str | int] | None
    """Query parameters."""
    json: object
    """A JSON body, encoded by httpx; ``None`` (or absent) sends none."""
    content: bytes | None
    """A body of these exact bytes (e.g. what a signature covers)."""
    headers: Mapping[str, str] | None
    """Added to the API's headers, replacing any of the same name."""


class Classifier(Protocol):
    """Maps a failed (non-2xx) answer to the exception to raise, e.g. ``error_for_response``."""

    def __call__(self, response: httpx.Response, *, doing: str) -> ConnectorError: ...


def bearer(token: SecretStr) -> dict[str, str]:
    """The RFC 6750 §2.1 ``Authorization: Bearer`` header for ``token`` (a new dict each call)."""
    return {"Authorization": f"Bearer {token.get_secret_value()}"}


def transport_error(exc: httpx.TransportError, *, doing: str) -> ConnectorError:
    """The exception-tree error for a request that got no answer; ``doing`` starts its safe ``detail``."""
    described = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.UnsupportedProtocol):
        return RejectedError(f"{doing}: {described}")
    if isinstance(exc, httpx.TimeoutException):
        return RetryableError(f"{doing}: timed out ({described})")
    return RetryableError(f"{doing}: {described}")  # refused, reset or dropped connections, protocol errors


class HttpApi:
    """One workspace API on the caller's client: base URL, fixed headers, and how its failures map."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        classify: Classifier = error_for_response,
        json_media_type: str | None = None,
    ) -> None:
        """``headers`` go on every request (copied); ``json_media_type`` replaces ``application/json`` on
        requests with a ``json`` body (e.g. ``application/scim+json``)."""
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._classify = classify
        self._json_media_type = json_media_type

    def url(self, target: str) -> str:
        """``target`` as it is when it is an absolute URL (e.g. a ``next`` link), else appended to the base URL."""
        return target if httpx.URL(target).is_absolute_url else f"{self._base}{target}"

    async def request(
        self, method: str, target: str, *, doing: str, **options: Unpack[RequestOptions]
    ) -> httpx.Response:
        """One request with any answer returned as it is (the caller classifies the status).

        Raises ``transport_error``'s error when no answer came.
        """
        headers = httpx.Headers(self._headers)
        headers.update(options.get("headers") or {})
        body = options.get("json")
        if body is not None and self._json_media_type is not None:
            headers["Content-Type"] = self._json_media_type
        try:
            return await self._http.request(
                method,
                self.url(target),
                params=options.get("params"),
                json=body,
                content=options.get("content"),
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise transport_error(exc, doing=doing) from exc

    @overload
    async def send(
        self,
        method: str,
        target: str,
        *,
        doing: str,
        missing_ok: Literal[False] = False,
        **options: Unpack[RequestOptions],
    ) -> httpx.Response: ...

    @overload
    async def send(
        self, method: str, target: str, *, doing: str, missing_ok: Literal[True], **options: Unpack[RequestOptions]
    ) -> httpx.Response | None: ...

    async def send(
        self, method: str, target: str, *, doing: str, missing_ok: bool = False, **options: Unpack[RequestOptions]
    ) -> httpx.Response | None:
        """``request``, then a 2xx answer, or ``None`` for a 404 when ``missing_ok``; else the classified error."""
        response = await self.request(method, target, doing=doing, **options)
        if missing_ok and response.status_code == 404:
            return None
        if not response.is_success:
            raise self._classify(response, doing=doing)
        return response
