"""A Standard Webhooks receiver as a real process: the in-house app that ``connectors/webhook.py`` talks to.

It implements the receiver contract in ``connectors/webhook.py``'s docstring and nothing more, and it
verifies every request with the reference ``standardwebhooks`` library (PyPI ``standardwebhooks``, by
the Standard Webhooks authors), never with our own signing code, so a signature bug in the connector
cannot be hidden by the same bug here. Started as::

    WEBHOOK_RECEIVER_SECRET=whsec_... python -m tests.peers.webhook_receiver --port P --page-size N \
        [--delay-ms MS] [--state-file PATH] [--record-file PATH]

- ``POST /hooks``: verify (401 if the signature, timestamp or headers are bad), deduplicate by
  ``webhook-id`` (a replay answers ``unchanged``), then apply the event to accounts kept in memory by
  ``subject_id``; answers ``{"outcome", "remote_id"}``.
- ``GET /accounts``: signed over an empty body; pages of ``N`` accounts with a relative ``next`` link,
  so listing always crosses pages in the tests.
- ``GET /healthz``: unauthenticated readiness probe.

Options for the fault-tolerance tests (``tests/lifecycle/test_faults.py``): ``--delay-ms`` holds each
verified ``POST /hooks`` that long before applying it, so overlapping deliveries would show;
``--state-file`` keeps accounts and seen ids in a JSON file (loaded at start, rewritten after every
change), so the receiver can be stopped and started again on the same port without forgetting;
``--record-file`` appends one JSON line per verified ``POST /hooks`` (webhook-id, type, subject id,
wall-clock start and end, outcome, whether it was a replay).

Test modules use ``running_webhook_receiver`` (or ``start_webhook_receiver`` to stop and restart one);
the process must still be alive at teardown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = [
    "ReceiverState",
    "WebhookReceiver",
    "create_app",
    "read_records",
    "running_webhook_receiver",
    "start_webhook_receiver",
]

SECRET_ENV = "WEBHOOK_RECEIVER_SECRET"
REPO_ROOT = Path(__file__).resolve().parents[2]
LISTED_FIELDS = ("remote_id", "subject_id", "user_name", "email", "active", "roles", "groups")
ACCOUNT_FIELDS = ("user_name", "email", "display_name", "given_name", "family_name", "roles", "groups", "attributes")


@dataclass
class ReceiverState:
    """Accounts by subject id, and the outcome already given for each webhook id (for replays)."""

    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> ReceiverState:
        """The state saved in ``path``, or a fresh one (no path, or no file yet)."""
        if path is None or not path.exists():
            return cls()
        saved = json.loads(path.read_text())
        return cls(accounts=saved["accounts"], seen=saved["seen"])

    def save(self, path: Path | None) -> None:
        """Write the state to ``path`` atomically (nothing without a path)."""
        if path is None:
            return
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps({"accounts": self.accounts, "seen": self.seen}))
        os.replace(partial, path)


def _answer(outcome: str, remote_id: str | None) -> JSONResponse:
    """The receiver contract's 200 answer."""
    return JSONResponse({"outcome": outcome, "remote_id": remote_id})


def _refuse(status: int, error: str) -> JSONResponse:
    """A refusal the connector maps by status (401 credentials, 400 rejected)."""
    return JSONResponse({"error": error}, status_code=status)


def _apply(state: ReceiverState, event_type: str, data: dict[str, Any]) -> tuple[str, str | None] | None:
    """Apply one verified event; (outcome, remote_id), or None if its type is unknown."""
    subject = data["subject_id"]
    current = state.accounts.get(subject)
    if event_type == "account.updated":
        desired = {name: data["account"].get(name) for name in ACCOUNT_FIELDS}
        desired["active"] = data["account"].get("active") is not False
        if current is None:
            remote_id = f"app-{uuid.uuid4().hex[:12]}"
            state.accounts[subject] = {
                "remote_id": remote_id,
                "tenant_id": data["tenant_id"],
                "subject_id": subject,
                "sessions_live": True,
                **desired,
            }
            return "changed", remote_id
        if all(current[name] == value for name, value in desired.items()):
            return "unchanged", current["remote_id"]
        if desired["active"] and not current["active"]:
            current["sessions_live"] = True
        current.update(desired)
        return "changed", current["remote_id"]
    if event_type not in ("account.suspended", "account.sessions_revoked", "account.deprovisioned"):
        return None
    if current is None:
        return "unchanged", None
    if event_type == "account.deprovisioned":
        del state.accounts[subject]
        return "changed", None
    if event_type == "account.suspended":
        if not current["active"]:
            return "unchanged", current["remote_id"]
        current.update(active=False, sessions_live=False)
        return "changed", current["remote_id"]
    if not current["sessions_live"]:
        return "unchanged", current["remote_id"]
    current["sessions_live"] = False
    return "changed", current["remote_id"]


def create_app(
    *, secret: str, page_size: int, delay: float = 0.0, state_file: Path | None = None, record_file: Path | None = None
) -> Starlette:
    """The receiver app; every request but /healthz must be signed.

    State is in memory, or loaded from and saved to ``state_file``; ``delay`` seconds are spent on each
    verified event before it is applied; ``record_file`` gets one JSON line per verified event.
    """
    webhook = Webhook(secret)
    state = ReceiverState.load(state_file)

    def record(started: float, msg_id: str, event: Any, answer: JSONResponse, replay: bool) -> None:
        if record_file is None:
            return
        data = event.get("data") if isinstance(event, dict) else None
        line = {
            "id": msg_id,
            "type": event.get("type") if isinstance(event, dict) else None,
            "subject_id": data.get("subject_id") if isinstance(data, dict) else None,
            "start": started,
            "end": time.time(),
            "status": answer.status_code,
            "answer": json.loads(bytes(answer.body)),
            "replay": replay,
        }
        with record_file.open("a") as out:
            out.write(json.dumps(line) + "\n")

    async def hooks(request: Request) -> JSONResponse:
        """Verify, (wait,) deduplicate by webhook-id, apply, (save, record)."""
        started = time.time()
        body = await request.body()
        try:
            webhook.verify(body, dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: a malformed signature header
            return _refuse(401, f"signature: {exc}")
        try:
            event = json.loads(body)
        except ValueError:
            return _refuse(400, "the signed body is not JSON")
        msg_id = request.headers["webhook-id"]
        if delay:
            await asyncio.sleep(delay)
        replay = msg_id in state.seen
        answer = _event(msg_id, event)
        if not replay and answer.status_code == 200:
            state.save(state_file)
        record(started, msg_id, event, answer, replay)
        return answer

    def _event(msg_id: str, event: Any) -> JSONResponse:
        """Deduplicate by webhook-id, validate, apply."""
        if msg_id in state.seen:
            return _answer("unchanged", state.seen[msg_id])
        data = event.get("data") if isinstance(event, dict) else None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("subject_id"), str)
            or not isinstance(data.get("tenant_id"), str)
            or (event.get("type") == "account.updated" and not isinstance(data.get("account"), dict))
        ):
            return _refuse(400, "the event has no data.subject_id / data.tenant_id (or no data.account)")
        applied = _apply(state, str(event.get("type")), data)
        if applied is None:
            return _refuse(400, f"unknown event type {event.get('type')!r}")
        state.seen[msg_id] = applied[1]
        return _answer(*applied)

    async def accounts(request: Request) -> JSONResponse:
        """One signed page of accounts with a relative next link."""
        try:
            webhook.verify(b"", dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            return _refuse(401, f"signature: {exc}")
        offset = int(request.query_params.get("offset", "0"))
        listed = list(state.accounts.values())
        page = [{key: account[key] for key in LISTED_FIELDS} for account in listed[offset : offset + page_size]]
        more = offset + page_size < len(listed)
        return JSONResponse({"accounts": page, "next": f"accounts?offset={offset + page_size}" if more else None})

    async def healthz(request: Request) -> JSONResponse:
        """Readiness, unsigned."""
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/hooks", hooks, methods=["POST"]),
            Route("/accounts", accounts, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


@dataclass(frozen=True)
class WebhookReceiver:
    """A running receiver: where to send events, where to list, and its log."""

    hooks_url: str
    accounts_url: str
    secret: str
    log_path: Path
    process: subprocess.Popen[bytes]
    port: int = 0
    record_path: Path | None = None
    """The ``--record-file`` of this receiver, if any (see ``read_records``)."""

    def log(self) -> str:
        """Everything the receiver wrote so far (shown when it fails)."""
        return self.log_path.read_text(errors="replace")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The lines a receiver appended to its ``--record-file``, in the order it finished them."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_webhook_receiver(
    *,
    secret: str,
    workdir: Path,
    page_size: int = 3,
    port: int | None = None,
    delay: float = 0.0,
    state_file: Path | None = None,
    record_file: Path | None = None,
) -> WebhookReceiver:
    """Start the receiver (on ``port``, else a free one) and wait for /healthz; the caller stops it.

    The log is appended to, so a receiver started again on the same port keeps one log.
    """
    import pytest

    from tests.peers.entente_process import START_TIMEOUT, free_port

    port = port or free_port()
    log_path = workdir / f"webhook-receiver-{port}.log"
    env = {**os.environ, SECRET_ENV: secret, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tests.peers.webhook_receiver", "--port", str(port), "--page-size", str(page_size)]
    if delay:
        command += ["--delay-ms", str(round(delay * 1000))]
    if state_file is not None:
        command += ["--state-file", str(state_file)]
    if record_file is not None:
        command += ["--record-file", str(record_file)]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our own module and arguments
            command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    base = f"http://127.0.0.1:{port}"
    receiver = WebhookReceiver(f"{base}/hooks", f"{base}/accounts", secret, log_path, process, port, record_file)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"webhook receiver exited with {process.returncode}\n--- log ---\n{receiver.log()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return receiver
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"webhook receiver silent for {START_TIMEOUT:.0f}s\n--- log ---\n{receiver.log()}")
        time.sleep(0.1)


@contextmanager
def running_webhook_receiver(
    *,
    secret: str,
    workdir: Path,
    page_size: int = 3,
    delay: float = 0.0,
    state_file: Path | None = None,
    record_file: Path | None = None,
) -> Iterator[WebhookReceiver]:
    """Start the receiver on a free 127.0.0.1 port, wait for /healthz, stop it at exit (failing if it died)."""
    import pytest

    from tests.peers.entente_process import stop_process

    receiver = start_webhook_receiver(
        secret=secret, workdir=workdir, page_size=page_size, delay=delay, state_file=state_file, record_file=record_file
    )
    died: int | None = None
    try:
        yield receiver
    finally:
        died = stop_process(receiver.process)
    if died is not None:
        pytest.fail(f"webhook receiver died during the tests (exit {died})\n--- log ---\n{receiver.log()}")


def main() -> None:
    """Serve the receiver on 127.0.0.1 with the secret from the environment (never the command line)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--page-size", type=int, default=3)
    parser.add_argument("--delay-ms", type=int, default=0, help="Hold each verified event this long first.")
    parser.add_argument("--state-file", type=Path, default=None, help="Keep accounts in this JSON file.")
    parser.add_argument("--record-file", type=Path, default=None, help="Append one JSON line per event here.")
    args = parser.parse_args()
    app = create_app(
        secret=os.environ[SECRET_ENV],
        page_size=args.page_size,
        delay=args.delay_ms / 1000,
        state_file=args.state_file,
        record_file=args.record_file,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
