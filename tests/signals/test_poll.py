"""RFC 8936 poll: a leaver's SETs wait for the receiver, are returned until acknowledged, and a long poll
answers as soon as one is queued."""

from __future__ import annotations

import threading
import time
from typing import Any

from joserfc import jwt
from sqlmodel import Session

from broker.provider.revocation import revoke_person
from tests.provider.conftest import RelyingParty, World, jwks
from tests.signals.conftest import (
    ACCOUNT_DISABLED,
    OIDC_ISSUER,
    POLL,
    SESSION_REVOKED,
    TRANSMITTER,
    basic,
    create_stream,
    deactivate,
    sets_of,
)


def _poll(rp: RelyingParty, stream_id: str, **body: Any) -> dict[str, Any]:
    response = rp.browser.post(f"/ssf/poll/{stream_id}", json=body, headers=basic(rp.client_id, rp.secret))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()  # type: ignore[no-any-return]


def _leaver_with_poll_stream(world: World) -> tuple[RelyingParty, str, dict[str, Any]]:
    alice = world.person("alice")
    world.login(alice["id"])
    chat = world.client()
    chat.login_flow()
    stream = create_stream(chat, {"method": POLL})
    return chat, stream["stream_id"], alice


def test_poll_returns_sets_until_acknowledged(world: World) -> None:
    chat, stream_id, alice = _leaver_with_poll_stream(world)
    assert _poll(chat, stream_id, returnImmediately=True) == {"sets": {}, "moreAvailable": False}
    deactivate(world, alice["id"])

    first = _poll(chat, stream_id, returnImmediately=True)
    assert first["moreAvailable"] is False and len(first["sets"]) == 2
    keys = jwks(world.browser)
    types = set()
    for jti, token in first["sets"].items():
        decoded = jwt.decode(token, keys, algorithms=["RS256"])
        assert decoded.header["typ"] == "secevent+jwt"
        claims = decoded.claims
        assert claims["jti"] == jti and claims["iss"] == TRANSMITTER and claims["aud"] == chat.client_id
        assert claims["sub_id"] == {"format": "iss_sub", "iss": OIDC_ISSUER, "sub": alice["id"]}
        assert "sub" not in claims and "exp" not in claims
        types |= set(claims["events"])
    assert types == {SESSION_REVOKED, ACCOUNT_DISABLED}

    again = _poll(chat, stream_id, returnImmediately=True)  # nothing acknowledged: the same SETs
    assert set(again["sets"]) == set(first["sets"])
    jtis = sorted(first["sets"])
    one = _poll(chat, stream_id, returnImmediately=True, ack=[jtis[0]], maxEvents=5)
    assert set(one["sets"]) == {jtis[1]}
    done = _poll(chat, stream_id, returnImmediately=True, ack=[jtis[1], jtis[0]])
    assert done == {"sets": {}, "moreAvailable": False}
    rows = sets_of(world.engine, stream_id)
    assert {r.state for r in rows} == {"delivered"} and all(r.delivered_at for r in rows)


def test_max_events_more_available_and_set_errors(world: World) -> None:
    chat, stream_id, alice = _leaver_with_poll_stream(world)
    deactivate(world, alice["id"])
    page = _poll(chat, stream_id, returnImmediately=True, maxEvents=1)
    assert len(page["sets"]) == 1 and page["moreAvailable"] is True
    [jti] = page["sets"]
    only_ack = _poll(chat, stream_id, maxEvents=0, setErrs={jti: {"err": "invalid_key", "description": "kid?"}})
    assert only_ack == {"sets": {}, "moreAvailable": False}  # maxEvents 0: acknowledge only, never wait
    rest = _poll(chat, stream_id, returnImmediately=True)
    assert len(rest["sets"]) == 1 and jti not in rest["sets"]
    refused = next(r for r in sets_of(world.engine, stream_id) if r.jti == jti)
    assert refused.state == "rejected" and refused.last_error == "invalid_key: kid?"


def test_long_poll_answers_when_a_set_is_queued(world: World) -> None:
    chat, stream_id, alice = _leaver_with_poll_stream(world)
    empty_started = time.monotonic()
    assert _poll(chat, stream_id) == {"sets": {}, "moreAvailable": False}
    assert time.monotonic() - empty_started >= world.settings.signals_poll_wait_seconds * 0.9

    def kill() -> None:
        time.sleep(0.15)
        with Session(world.engine) as session:
            revoke_person(session, partner_id=world.partner.id, subject_id=alice["id"], reason="kill_switch")
            session.commit()

    killer = threading.Thread(target=kill)
    killer.start()
    woke = _poll(chat, stream_id, maxEvents=10)
    killer.join()
    assert len(woke["sets"]) == 2


def test_poll_refusals(world: World) -> None:
    chat, stream_id, _ = _leaver_with_poll_stream(world)
    auth = basic(chat.client_id, chat.secret)
    bad = world.browser.post(f"/ssf/poll/{stream_id}", json={"maxEvents": -1}, headers=auth)
    assert bad.status_code == 400 and bad.json()["err"] == "invalid_request"
    assert world.browser.post(f"/ssf/poll/{stream_id}", json={}).status_code == 401
    pushed = create_stream(chat, {"method": "urn:ietf:rfc:8935", "endpoint_url": "https://chat.example/events"})
    refused = world.browser.post(f"/ssf/poll/{pushed['stream_id']}", json={"returnImmediately": True}, headers=auth)
    assert refused.status_code == 400 and "push" in refused.json()["description"]
