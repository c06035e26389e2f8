"""Many local SCIM workspaces in one process, each answering after a fixed latency: the fan-out benchmark's targets.

One uvicorn process serves ``--tenants`` tenants of PyPI scim2-server's ASGI application, each with its
own in-memory storage, under ``/<tenant>/v2`` (the URL-prefix tenancy of RFC 7644 §6.1). Every SCIM
request first waits ``--latency-ms`` with ``asyncio.sleep`` (a remote service's round trip that costs
no CPU here, so 50 concurrent requests all wait at once) and is then served by scim2-server.

``GET /_stats`` (no tenant, no auth) reports what the target itself did since the last
``POST /_stats/reset``: requests by method, the time scim2-server spent serving them (without the
sleep), the whole in-process latency (sleep + serving + waiting for the event loop), the process
CPU time used, and optionally (``?deletes=1``) when each ``DELETE /Users/{id}`` answered, per tenant.

    python bench/fanout_target.py --port 9100 --tenants ws00,ws01 --latency-ms 20 --token secret
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import parse_qsl

from scim2_models import ScimProvider, UnauthorizedException
from scim2_server.applications.asgi import ASGIApplication, Receive, Scope, Send
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.service import ScimService
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class _TokenApplication(ASGIApplication):
    """scim2-server's ASGI application with one static bearer token."""

    token: str = ""

    def check_auth(self, request: ScimRequest) -> None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if self.token and (scheme.lower() != "bearer" or token != self.token):
            raise UnauthorizedException


class FanoutTarget:
    """ASGI app: ``/<tenant>/v2/...`` -> that tenant's scim2-server after ``latency`` seconds."""

    def __init__(self, tenants: list[str], latency: float, token: str) -> None:
        provider = ScimProvider.from_discovery(
            load_default_schemas().values(),
            load_default_resource_types().values(),
            config=load_default_service_provider_config(),
        )
        service = ScimService(provider, secret=secrets.token_urlsafe(32))
        self.latency = latency
        self.apps: dict[str, _TokenApplication] = {}
        for tenant in tenants:
            app = _TokenApplication(AsyncInMemoryStorage(), provider, service=service)
            app.token = token
            self.apps[tenant] = app
        self.reset()

    def reset(self) -> None:
        self.methods: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.serve_ms: list[float] = []
        self.total_ms: list[float] = []
        self.deletes: dict[str, dict[str, float]] = defaultdict(dict)
        self.cpu_at = time.process_time()
        self.wall_at = time.monotonic()

    def stats(self, with_deletes: bool) -> dict[str, Any]:
        wall = time.monotonic() - self.wall_at
        cpu = time.process_time() - self.cpu_at
        report: dict[str, Any] = {
            "tenants": len(self.apps),
            "latency_ms": self.latency * 1000,
            "pid": os.getpid(),
            "requests": sum(self.methods.values()),
            "by_method": dict(self.methods),
            "by_status": {str(k): v for k, v in self.statuses.items()},
            "serve_ms_p50": _percentile(self.serve_ms, 0.5),
            "serve_ms_p99": _percentile(self.serve_ms, 0.99),
            "serve_ms_mean": sum(self.serve_ms) / len(self.serve_ms) if self.serve_ms else None,
            "total_ms_p50": _percentile(self.total_ms, 0.5),
            "total_ms_p99": _percentile(self.total_ms, 0.99),
            "total_ms_max": max(self.total_ms) if self.total_ms else None,
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_busy": cpu / wall if wall > 0 else None,
        }
        if with_deletes:
            report["deletes"] = self.deletes
        return report

    async def _json(self, send: Send, body: dict[str, Any], status: int = 200) -> None:
        payload = json.dumps(body).encode()
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await ASGIApplication.serve_lifespan(receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/_stats"):
            if scope["method"] == "POST":
                self.reset()
                await self._json(send, {"reset": True})
            else:
                query = dict(parse_qsl(scope["query_string"].decode()))
                await self._json(send, self.stats(query.get("deletes") == "1"))
            return
        tenant, _, rest = path.lstrip("/").partition("/")
        app = self.apps.get(tenant)
        if app is None:
            await self._json(send, {"detail": f"no tenant {tenant!r}"}, 404)
            return
        began = time.perf_counter()
        await asyncio.sleep(self.latency)
        status: list[int] = []

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        served = time.perf_counter()
        await app({**scope, "root_path": f"/{tenant}"}, receive, recording_send)
        done = time.perf_counter()
        method = scope["method"]
        self.methods[method] += 1
        self.statuses[status[0] if status else 0] += 1
        self.serve_ms.append((done - served) * 1000)
        self.total_ms.append((done - began) * 1000)
        if method == "DELETE" and status and status[0] == 204:
            self.deletes[tenant][rest.rsplit("/", 1)[-1]] = time.time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tenants", required=True, help="comma-separated tenant names (URL prefixes)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--token", default="", help="bearer token every tenant requires (none: open)")
    args = parser.parse_args()

    import uvicorn

    app = FanoutTarget([t for t in args.tenants.split(",") if t], args.latency_ms / 1000, args.token)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        backlog=4096,
        timeout_keep_alive=120,
    )


if __name__ == "__main__":
    main()
