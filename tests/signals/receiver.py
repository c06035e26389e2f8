"""An RFC 8935 push receiver on 127.0.0.1, written from the specs with joserfc, never with Entente's code.

It is what a workspace implements to receive Entente's SETs, so a bug in Entente's signing or claims
cannot be hidden by the same bug here. For each ``POST /events`` it checks, in order:

- ``Authorization`` equals the configured value (else 401 ``authentication_failed``, RFC 8935 §2.3);
- ``Content-Type: application/secevent+jwt`` (else 400 ``invalid_request``);
- the JWS signature (RS256) against the key set it was given, fetched from Entente's JWKS (else 400
  ``invalid_key``), and the header ``typ: secevent+jwt`` (SSF §4.1.1);
- ``iss`` (``invalid_issuer``) and ``aud`` (``invalid_audience``);
- RFC 8417 / SSF §4.1: ``iat`` and ``jti`` present, ``sub`` and ``exp`` absent, exactly one event,
  a ``sub_id`` with a ``format`` (else ``invalid_request``);

then answers 202 and keeps the SET (a repeated ``jti`` is accepted again and kept once). The server
runs in a thread of the test process and can be stopped and started again on the same port.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

__all__ = ["ReceivedSet", "SetReceiver"]


@dataclass(frozen=True)
class ReceivedSet:
    header: dict[str, Any]
    claims: dict[str, Any]
    token: str

    @property
    def event_type(self) -> str:
        return str(next(iter(self.claims["events"])))

    @property
    def event(self) -> dict[str, Any]:
        return dict(self.claims["events"][self.event_type])


class _Refusal(Exception):
    def __init__(self, status: int, err: str, description: str) -> None:
        super().__init__(description)
        self.status, self.err, self.description = status, err, description


@dataclass
class SetReceiver:
    """Accepts SETs for one ``audience`` from one ``issuer``, verified with ``keys``."""

    issuer: str
    audience: str
    keys: KeySet
    authorization: str | None = None
    received: list[ReceivedSet] = field(default_factory=list)
    attempts: int = 0
    """Every POST that reached the handler, accepted or not."""
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> SetReceiver:
        """Listen (on the port it had before, else a free one) in a daemon thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                return

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.attempts += 1
                try:
                    receiver._accept(dict(self.headers.items()), body)
                except _Refusal as refusal:
                    self._answer(refusal.status, {"err": refusal.err, "description": refusal.description})
                    return
                self._answer(202, None)

            def _answer(self, status: int, body: dict[str, str] | None) -> None:
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until ``start`` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _accept(self, headers: dict[str, str], body: bytes) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        if self.authorization is not None and lowered.get("authorization") != self.authorization:
            raise _Refusal(401, "authentication_failed", "wrong or missing Authorization")
        if lowered.get("content-type", "").split(";")[0].strip() != "application/secevent+jwt":
            raise _Refusal(400, "invalid_request", "Content-Type must be application/secevent+jwt")
        token = body.decode()
        try:
            decoded = jwt.decode(token, self.keys, algorithms=["RS256"])
        except (JoseError, ValueError) as exc:
            raise _Refusal(400, "invalid_key", f"signature: {exc}") from None
        header, claims = dict(decoded.header), dict(decoded.claims)
        if header.get("typ") != "secevent+jwt":
            raise _Refusal(400, "invalid_request", f"typ is {header.get('typ')!r}")
        if claims.get("iss") != self.issuer:
            raise _Refusal(400, "invalid_issuer", f"iss is {claims.get('iss')!r}")
        if claims.get("aud") != self.audience:
            raise _Refusal(400, "invalid_audience", f"aud is {claims.get('aud')!r}")
        events = claims.get("events")
        if (
            not isinstance(claims.get("iat"), int)
            or not claims.get("jti")
            or "sub" in claims
            or "exp" in claims
            or not isinstance(events, dict)
            or len(events) != 1
            or not isinstance(claims.get("sub_id"), dict)
            or "format" not in claims["sub_id"]
        ):
            raise _Refusal(400, "invalid_request", f"not an SSF SET: {sorted(claims)}")
        with self._lock:
            if all(r.claims["jti"] != claims["jti"] for r in self.received):
                self.received.append(ReceivedSet(header, claims, token))
