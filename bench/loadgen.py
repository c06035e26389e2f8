"""A lean HTTP/1.1 load generator: keep-alive connections on asyncio streams (uvloop when present).

The benchmark's server, its database and its load generator share one small machine, so whatever
CPU the client burns per request is taken from the server it measures. httpx spends about 2-3 ms
of CPU per request here; this client about a tenth of that, which is what lets a 500 requests/s
server show as one. It speaks only what the benchmark needs: one request at a time per
connection, ``Content-Length`` bodies (no chunked responses), no redirects; an HTTP/1.0 server
(scim2-server's WSGI reference server) gets a new connection per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["Outcome", "run_requests"]


@dataclass
class Outcome:
    """What a run did: successes, failures (status or transport) with the first few reasons."""

    ok: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending each successful request to its last response byte."""
    elapsed: float = 0.0


class _Connection:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\n{self.fixed}Content-Length: {len(body)}\r\n\r\n".encode()
        self.writer.write(head + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length: int | None = None
        close = status_line.startswith(b"HTTP/1.0")  # no keep-alive unless the server says so
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value == b"close" or (close and value != b"keep-alive")
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by this load generator")
        if length is not None:
            payload = await self.reader.readexactly(length)
        else:
            payload = await self.reader.read() if close else b""  # no length: the body ends with the connection
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _run(base: str, headers: dict[str, str], requests: list[tuple[str, str, bytes]], concurrency: int) -> Outcome:
    url = urlsplit(base)
    prefix = url.path.rstrip("/")
    pending = iter(requests)
    outcome = Outcome()

    async def worker() -> None:
        connection = _Connection(url.hostname or "127.0.0.1", url.port or 80, headers)
        try:
            for method, path, body in pending:
                sent = time.perf_counter()
                try:
                    status, payload = await connection.request(method, prefix + path, body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    outcome.errors.append(f"{type(exc).__name__}: {exc}")
                    await connection.close()
                    continue
                if 200 <= status < 300:
                    outcome.ok += 1
                    outcome.latencies.append(time.perf_counter() - sent)
                else:
                    outcome.errors.append(f"{status}: {payload[:200]!r}")
        finally:
            await connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    outcome.elapsed = time.perf_counter() - began
    return outcome


def run_requests(
    base: str, headers: dict[str, str], requests: list[tuple[str, str, bytes]], concurrency: int
) -> Outcome:
    """Send ``(method, path under base, body)`` requests over ``concurrency`` keep-alive connections."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run(base, headers, requests, concurrency))
    return uvloop.run(_run(base, headers, requests, concurrency))
