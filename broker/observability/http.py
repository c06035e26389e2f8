"""Per-request observability: the X-Request-ID, one access log line per request, the SCIM request counter.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so the request context it sets is
the one the endpoint, its dependencies and uvicorn's own access logger run in.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.observability.logging import RequestContext, request_context
from broker.observability.metrics import observe_scim_request

__all__ = ["REQUEST_ID_HEADER", "RequestObservabilityMiddleware", "bind_partner"]

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""A caller's id is honoured only when it is short and plain: it is written into every log line."""
access_log = logging.getLogger("entente.access")
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Polled every few seconds by Kubernetes and Prometheus: their access lines are DEBUG, not INFO."""
_NEW_IDS = random.Random()  # noqa: S311 - correlates log lines, never a secret
"""Request ids need to be unique, not secret: a seeded generator, not ``uuid4``. ``uuid4`` reads the
kernel's ``getrandom``, which releases the interpreter lock on the event loop; taking it back waits
behind request threads (py-spy put an eighth of the loop's samples under SCIM PATCH load there)."""
os.register_at_fork(after_in_child=_NEW_IDS.seed)  # a forked worker must not repeat its parent's ids


def bind_partner(slug: str) -> None:
    """Name the partner the current request acts for (its SCIM token's), for its logs and metrics."""
    context = request_context.get()
    if context is not None:
        context.partner = slug


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1").strip()
            if _VALID_ID.match(candidate):
                return candidate
            break
    return f"{_NEW_IDS.getrandbits(128):032x}"


class RequestObservabilityMiddleware:
    """Honours or makes the request id, echoes it, logs the request, counts SCIM requests by partner.

    The access line (logger ``entente.access``) has method, path (no query string: it may carry
    an address), status, duration_ms, request_id and, for SCIM, the partner. A request that ends
    in an unhandled exception is logged and counted as 500 (the error edge answers it outside).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(request_id=_request_id(scope))
        token = request_context.set(context)
        started = time.perf_counter()
        status = 500
        header = (REQUEST_ID_HEADER.lower().encode(), context.request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path: str = scope.get("path", "")
            method: str = scope.get("method", "")
            if path.startswith("/scim"):
                observe_scim_request(partner=context.partner, method=method, status=status)
            access_log.log(
                logging.DEBUG if path in _PROBES else logging.INFO,
                "%s %s %s",
                method,
                path,
                status,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_context.reset(token)
