"""`entente signals stream add | list | remove`: the typer app in process, on the session's database (both
backends), for clients registered as the provider tests register them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from broker.cli import app
from broker.provider.revocation import revoke_person
from broker.signals.models import SignalStream
from tests.cli_runner import Run
from tests.conftest import TEST_SECRET_KEY
from tests.provider.conftest import World
from tests.signals.conftest import TRANSMITTER

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
Entente = Callable[..., Run]


@pytest.fixture
def entente(database_url: str) -> Entente:
    """entente(*args) -> Run: the console script's app with this session's database, key and public URL."""
    env = {
        "ENTENTE_DATABASE_URL": database_url,
        "ENTENTE_SECRET_KEY": TEST_SECRET_KEY,
        "ENTENTE_PUBLIC_BASE_URL": TRANSMITTER,
        "COLUMNS": "200",
    }

    def run(*args: str) -> Run:
        done = CliRunner().invoke(app, list(args), env=env)
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            raise done.exception
        return Run(done.exit_code, done.stdout, done.stderr)

    return run


def _ok(result: Run) -> Run:
    assert result.code == 0 and result.stderr == "", result
    return result


def _fails(result: Run, message: str) -> None:
    assert (result.code, result.stdout, result.stderr) == (1, "", f"error: {message}\n"), result


def _streams(world: World, client_id: str) -> list[SignalStream]:
    with Session(world.engine) as session:
        return list(session.exec(select(SignalStream).where(SignalStream.client_id == client_id)).all())


def test_add_push_and_poll_streams_then_list_and_remove(world: World, entente: Entente) -> None:
    client_id = world.client().client_id
    pushed = _ok(
        entente(
            "signals", "stream", "add", client_id, "--push", "https://chat.example/ssf/events",
            "--authorization-header", "Bearer rcv", "--event", ACCOUNT_DISABLED,
        )
    )  # fmt: skip
    assert pushed.lines[0].endswith(f"for client {client_id}: push https://chat.example/ssf/events")
    assert pushed.lines[1] == f"events delivered: {ACCOUNT_DISABLED}"
    polled = _ok(entente("signals", "stream", "add", client_id, "--poll", "--event", "urn:example:unknown"))
    assert polled.lines[1:] == ["events delivered: none", "not supported, never delivered: urn:example:unknown"]
    rows = {s.delivery_method: s for s in _streams(world, client_id)}
    push_row, poll_row = rows["urn:ietf:rfc:8935"], rows["urn:ietf:rfc:8936"]
    assert push_row.authorization_sealed and "rcv" not in push_row.authorization_sealed
    assert polled.lines[0].endswith(f"poll {TRANSMITTER}/ssf/poll/{poll_row.stream_id}")

    listed = _ok(entente("signals", "stream", "list", client_id)).lines
    assert sorted(listed) == sorted(
        [
            f"{push_row.stream_id}\t{client_id}\tpush\thttps://chat.example/ssf/events\tenabled\tpending 0\t"
            "account-disabled",
            f"{poll_row.stream_id}\t{client_id}\tpoll\t{TRANSMITTER}/ssf/poll/{poll_row.stream_id}\tenabled\t"
            "pending 0\t-",
        ]
    )
    everything = _ok(entente("signals", "stream", "list")).stdout
    assert all(line in everything for line in listed) and "Bearer rcv" not in everything

    removed = _ok(entente("signals", "stream", "remove", push_row.stream_id))
    assert removed.stdout == f"stream {push_row.stream_id} removed; 0 undelivered SETs dropped\n"
    assert [s.stream_id for s in _streams(world, client_id)] == [poll_row.stream_id]


def test_list_counts_what_a_stream_still_holds(world: World, entente: Entente) -> None:
    chat = world.client()
    _ok(entente("signals", "stream", "add", chat.client_id, "--poll"))
    [stream] = _streams(world, chat.client_id)
    alice = world.person("alice")
    world.login(alice["id"])
    chat.login_flow()
    with Session(world.engine) as session:
        revoke_person(session, partner_id=world.partner.id, subject_id=alice["id"], reason="kill_switch")
        session.commit()
    listed = _ok(entente("signals", "stream", "list", chat.client_id)).stdout
    assert "\tpending 2\tsession-revoked,account-disabled" in listed
    removed = _ok(entente("signals", "stream", "remove", stream.stream_id))
    assert removed.stdout.endswith("; 2 undelivered SETs dropped\n")


def test_stream_add_refusals(world: World, entente: Entente) -> None:
    client_id, spa = world.client().client_id, world.client(public=True).client_id
    _fails(entente("signals", "stream", "add", "no-such-client", "--poll"), "no OIDC client 'no-such-client'")
    _fails(
        entente("signals", "stream", "add", client_id, "--push", "http://chat.example/x"),
        "delivery.endpoint_url 'http://chat.example/x' must use https (http only on a loopback address)",
    )
    _fails(
        entente("signals", "stream", "add", spa, "--poll"),
        f"client {spa!r} is public: it has no secret to authenticate its polls with",
    )
    _fails(entente("signals", "stream", "remove", "nope"), "no stream 'nope'")
    for args in ((), ("--poll", "--push", "https://chat.example/x")):
        result = entente("signals", "stream", "add", client_id, *args)
        assert result.code == 2 and "exactly one of --push URL or --poll" in result.stderr
    assert _streams(world, client_id) == []
