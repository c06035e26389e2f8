"""RFC 8935 push: a leaver's or a kill switch's SETs reach a real receiver on 127.0.0.1, verified there
against Entente's JWKS; a receiver that is down gets them later, one that refuses a SET is not retried."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from broker.audit.log import AuditRecord
from broker.main import create_app
from broker.provider.revocation import revoke_person
from tests.provider.conftest import World
from tests.signals.conftest import (
    ACCOUNT_DISABLED,
    OIDC_ISSUER,
    PUSH,
    SESSION_REVOKED,
    TRANSMITTER,
    VERIFICATION,
    Pusher,
    basic,
    create_stream,
    deactivate,
    sets_of,
)
from tests.signals.receiver import SetReceiver

MakeReceiver = Callable[..., SetReceiver]


def test_scim_leaver_pushes_session_revoked_and_account_disabled_only_to_the_subscribed_client(
    world: World, make_receiver: MakeReceiver, pusher: Pusher
) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    chat, wiki, bystander = world.client(), world.client(), world.client()
    chat.login_flow()
    wiki.login_flow()  # saw alice too, but has no stream: told nothing
    receiver = make_receiver(chat.client_id, authorization="Bearer chat-receiver-secret")
    other = make_receiver(bystander.client_id)  # has a stream, never saw alice: told nothing
    stream = create_stream(
        chat, {"method": PUSH, "endpoint_url": receiver.url, "authorization_header": "Bearer chat-receiver-secret"}
    )
    quiet = create_stream(bystander, {"method": PUSH, "endpoint_url": other.url})

    deactivate(world, alice["id"])
    pusher.until(lambda: len(receiver.received) == 2)

    by_type = {r.event_type: r for r in receiver.received}
    assert set(by_type) == {SESSION_REVOKED, ACCOUNT_DISABLED}
    for got in receiver.received:
        assert got.header["typ"] == "secevent+jwt" and got.header["alg"] == "RS256" and got.header["kid"]
        assert got.claims["iss"] == TRANSMITTER and got.claims["aud"] == chat.client_id
        assert got.claims["sub_id"] == {"format": "iss_sub", "iss": OIDC_ISSUER, "sub": alice["id"]}
        assert "sub" not in got.claims and "exp" not in got.claims
    assert by_type[SESSION_REVOKED].claims["txn"] == by_type[ACCOUNT_DISABLED].claims["txn"]
    assert by_type[SESSION_REVOKED].claims["jti"] != by_type[ACCOUNT_DISABLED].claims["jti"]
    revoked = by_type[SESSION_REVOKED].event
    assert revoked["initiating_entity"] == "admin" and "left" in revoked["reason_admin"]["en"]
    assert abs(revoked["event_timestamp"] - by_type[SESSION_REVOKED].claims["iat"]) <= 1
    assert by_type[ACCOUNT_DISABLED].event == {}
    assert other.attempts == 0 and sets_of(world.engine, quiet["stream_id"]) == []
    rows = sets_of(world.engine, stream["stream_id"])
    assert [(r.state, r.attempts) for r in rows] == [("delivered", 1), ("delivered", 1)]
    assert all(r.delivered_at is not None for r in rows)
    with Session(world.engine) as session:
        audited = session.exec(
            select(AuditRecord).where(
                AuditRecord.action == "ssf.set_delivered", AuditRecord.resource_id == stream["stream_id"]
            )
        ).all()
        assert sorted(a.detail["event_type"] for a in audited) == sorted([SESSION_REVOKED, ACCOUNT_DISABLED])
        assert all(a.partner_id == world.partner.id for a in audited)


def test_kill_switch_pushes_both_events_once(world: World, make_receiver: MakeReceiver, pusher: Pusher) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    chat = world.client()
    chat.login_flow()
    receiver = make_receiver(chat.client_id)
    create_stream(chat, {"method": PUSH, "endpoint_url": receiver.url}, events_requested=[SESSION_REVOKED])
    with Session(world.engine) as session:
        first = revoke_person(session, partner_id=world.partner.id, subject_id=alice["id"], reason="kill_switch")
        session.commit()
        again = revoke_person(session, partner_id=world.partner.id, subject_id=alice["id"], reason="kill_switch")
        session.commit()
    assert (first.signals, again.signals) == (1, 0)  # only what the stream requested; nothing for a second kill
    pusher.until(lambda: len(receiver.received) == 1)
    [got] = receiver.received
    assert got.event_type == SESSION_REVOKED and "kill switch" in got.event["reason_admin"]["en"]


def test_receiver_down_gets_the_sets_later_with_the_same_jti(
    world: World, make_receiver: MakeReceiver, pusher: Pusher
) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    chat = world.client()
    chat.login_flow()
    receiver = make_receiver(chat.client_id)
    stream = create_stream(chat, {"method": PUSH, "endpoint_url": receiver.url})
    receiver.stop()  # the workspace is down when the person leaves

    deactivate(world, alice["id"])
    pusher.until(lambda: all(r.attempts >= 2 for r in sets_of(world.engine, stream["stream_id"])))
    pending = sets_of(world.engine, stream["stream_id"])
    assert [r.state for r in pending] == ["pending", "pending"]
    assert all("ConnectError" in (r.last_error or "") for r in pending)

    receiver.start()  # back on the same port
    pusher.until(lambda: len(receiver.received) == 2)
    assert sorted(r.claims["jti"] for r in receiver.received) == sorted(r.jti for r in pending)
    assert {r.state for r in sets_of(world.engine, stream["stream_id"])} == {"delivered"}


def test_a_set_the_receiver_refuses_is_rejected_not_retried(
    world: World, make_receiver: MakeReceiver, pusher: Pusher
) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    chat = world.client()
    chat.login_flow()
    receiver = make_receiver("some-other-audience")  # answers 400 invalid_audience (RFC 8935 §2.3)
    stream = create_stream(chat, {"method": PUSH, "endpoint_url": receiver.url})
    deactivate(world, alice["id"])
    pusher.until(lambda: {r.state for r in sets_of(world.engine, stream["stream_id"])} == {"rejected"})
    rows = sets_of(world.engine, stream["stream_id"])
    assert all(r.attempts == 1 and "invalid_audience" in (r.last_error or "") for r in rows)
    assert receiver.received == []


def test_paused_stream_holds_sets_until_enabled(world: World, make_receiver: MakeReceiver, pusher: Pusher) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    chat = world.client()
    chat.login_flow()
    receiver = make_receiver(chat.client_id)
    stream = create_stream(chat, {"method": PUSH, "endpoint_url": receiver.url})
    status = {"stream_id": stream["stream_id"], "status": "paused", "reason": "maintenance"}
    assert world.browser.post("/ssf/status", json=status, headers=basic(chat.client_id, chat.secret)).status_code == 200
    deactivate(world, alice["id"])
    pusher.until(lambda: True, rounds=2)
    assert receiver.attempts == 0 and [r.state for r in sets_of(world.engine, stream["stream_id"])] == ["pending"] * 2
    status["status"] = "enabled"
    assert world.browser.post("/ssf/status", json=status, headers=basic(chat.client_id, chat.secret)).status_code == 200
    pusher.until(lambda: len(receiver.received) == 2)


def test_disabled_stream_gets_nothing(world: World, make_receiver: MakeReceiver, pusher: Pusher) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    chat = world.client()
    chat.login_flow()
    stream = create_stream(chat, {"method": PUSH, "endpoint_url": make_receiver(chat.client_id).url})
    status = {"stream_id": stream["stream_id"], "status": "disabled"}
    assert world.browser.post("/ssf/status", json=status, headers=basic(chat.client_id, chat.secret)).status_code == 200
    deactivate(world, alice["id"])
    assert sets_of(world.engine, stream["stream_id"]) == []


def test_verification_event_is_pushed_with_the_state(world: World, make_receiver: MakeReceiver, pusher: Pusher) -> None:
    chat = world.client()
    receiver = make_receiver(chat.client_id)
    stream = create_stream(chat, {"method": PUSH, "endpoint_url": receiver.url})
    verify = world.browser.post(
        "/ssf/verify",
        json={"stream_id": stream["stream_id"], "state": "VGhpcyBpcyBhbiBleGFtcGxl"},
        headers=basic(chat.client_id, chat.secret),
    )
    assert verify.status_code == 204
    pusher.until(lambda: len(receiver.received) == 1)
    [got] = receiver.received
    assert got.event_type == VERIFICATION and got.event == {"state": "VGhpcyBpcyBhbiBleGFtcGxl"}
    assert got.claims["sub_id"] == {"format": "opaque", "id": stream["stream_id"]}


def test_the_app_runs_the_push_sender_woken_by_the_commit(world: World, make_receiver: MakeReceiver) -> None:
    """As in `entente serve`: the router's lifespan runs the sender, and a kill's commit wakes it."""
    alice = world.person("alice")
    world.login(alice["id"])
    chat = world.client()
    chat.login_flow()
    receiver = make_receiver(chat.client_id)
    create_stream(chat, {"method": PUSH, "endpoint_url": receiver.url})
    only_signals = world.settings.model_copy(
        update={"delivery_worker": False, "oidc_logout_sender": False, "delivery_poll_seconds": 30.0}
    )
    serving = create_app(only_signals)
    try:
        with TestClient(serving):  # runs the lifespan: the push sender, and nothing else
            with Session(world.engine) as session:
                revoke_person(session, partner_id=world.partner.id, subject_id=alice["id"], reason="left")
                session.commit()
            deadline = time.monotonic() + 10
            while len(receiver.received) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        serving.state.engine.dispose()
    assert {r.event_type for r in receiver.received} == {SESSION_REVOKED, ACCOUNT_DISABLED}
