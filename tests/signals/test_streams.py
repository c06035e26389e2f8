"""SSF 1.0 §7 discovery and §8.1 stream management: the receiver's own client credentials, its own streams only."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient
from sqlmodel import Session

from broker.signals.models import SignalStream
from tests.provider.conftest import World
from tests.signals.conftest import (
    ACCOUNT_DISABLED,
    OIDC_ISSUER,
    POLL,
    PUSH,
    SESSION_REVOKED,
    TRANSMITTER,
    basic,
    create_stream,
    sets_of,
)

PUSH_URL = "https://chat.example/ssf/events"


def test_discovery_document(browser: TestClient) -> None:
    response = browser.get("/.well-known/ssf-configuration")
    assert response.status_code == 200
    assert response.json() == {
        "spec_version": "1_0",
        "issuer": TRANSMITTER,
        "jwks_uri": f"{OIDC_ISSUER}/jwks",
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": f"{TRANSMITTER}/ssf/streams",
        "status_endpoint": f"{TRANSMITTER}/ssf/status",
        "verification_endpoint": f"{TRANSMITTER}/ssf/verify",
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:7617"}],
        "default_subjects": "ALL",
    }
    assert browser.get(response.json()["jwks_uri"].removeprefix(TRANSMITTER)).json()["keys"]


def test_create_read_update_replace_delete(world: World) -> None:
    chat = world.client()
    auth = basic(chat.client_id, chat.secret)
    created = create_stream(
        chat,
        {"method": PUSH, "endpoint_url": PUSH_URL, "authorization_header": "Bearer s3cret"},
        events_requested=[SESSION_REVOKED, "https://example.com/unknown-event"],
        description="chat leavers",
    )
    stream_id = created["stream_id"]
    assert created == {
        "stream_id": stream_id,
        "iss": TRANSMITTER,
        "aud": chat.client_id,
        "delivery": {"method": PUSH, "endpoint_url": PUSH_URL},  # the authorization_header is never shown
        "events_supported": [SESSION_REVOKED, ACCOUNT_DISABLED],
        "events_requested": [SESSION_REVOKED, "https://example.com/unknown-event"],
        "events_delivered": [SESSION_REVOKED],
        "min_verification_interval": world.settings.signals_min_verification_interval_seconds,
        "description": "chat leavers",
    }
    with Session(world.engine) as session:
        row = session.get(SignalStream, stream_id)
        assert row is not None and row.authorization_sealed and "s3cret" not in row.authorization_sealed
    assert world.browser.get("/ssf/streams", params={"stream_id": stream_id}, headers=auth).json() == created
    assert world.browser.get("/ssf/streams", headers=auth).json() == [created]

    patched = world.browser.patch(
        "/ssf/streams", json={"stream_id": stream_id, "events_requested": [ACCOUNT_DISABLED]}, headers=auth
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["events_delivered"] == [ACCOUNT_DISABLED]
    assert patched.json()["delivery"]["endpoint_url"] == PUSH_URL and patched.json()["description"] == "chat leavers"

    replaced = world.browser.put(
        "/ssf/streams", json={**patched.json(), "delivery": {"method": POLL}, "events_requested": None}, headers=auth
    )
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert body["delivery"] == {"method": POLL, "endpoint_url": f"{TRANSMITTER}/ssf/poll/{stream_id}"}
    assert body["events_delivered"] == [SESSION_REVOKED, ACCOUNT_DISABLED]  # absent: every supported event
    assert body["description"] == "chat leavers"  # echoed back in the PUT body, so kept

    silenced = world.browser.patch("/ssf/streams", json={"stream_id": stream_id, "events_requested": []}, headers=auth)
    assert silenced.json()["events_requested"] == [] and silenced.json()["events_delivered"] == []

    deleted = world.browser.delete("/ssf/streams", params={"stream_id": stream_id}, headers=auth)
    assert deleted.status_code == 204
    assert world.browser.get("/ssf/streams", params={"stream_id": stream_id}, headers=auth).status_code == 404
    assert world.browser.get("/ssf/streams", headers=auth).json() == []


def test_status_read_and_update(world: World) -> None:
    chat = world.client()
    auth = basic(chat.client_id, chat.secret)
    stream_id = create_stream(chat, {"method": POLL})["stream_id"]
    read = world.browser.get("/ssf/status", params={"stream_id": stream_id}, headers=auth)
    assert read.status_code == 200 and read.json() == {"stream_id": stream_id, "status": "enabled"}
    paused = world.browser.post(
        "/ssf/status", json={"stream_id": stream_id, "status": "paused", "reason": "upgrade"}, headers=auth
    )
    assert paused.json() == {"stream_id": stream_id, "status": "paused", "reason": "upgrade"}
    bad = world.browser.post("/ssf/status", json={"stream_id": stream_id, "status": "asleep"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["err"] == "invalid_request"


def test_verification_is_rate_limited(world: World) -> None:
    chat = world.client()
    auth = basic(chat.client_id, chat.secret)
    stream_id = create_stream(chat, {"method": POLL})["stream_id"]
    assert world.browser.post("/ssf/verify", json={"stream_id": stream_id}, headers=auth).status_code == 204
    again = world.browser.post("/ssf/verify", json={"stream_id": stream_id, "state": "x"}, headers=auth)
    assert again.status_code == 429 and again.json()["err"] == "too_many_requests"
    assert 1 <= int(again.headers["retry-after"]) <= world.settings.signals_min_verification_interval_seconds
    assert len(sets_of(world.engine, stream_id)) == 1


def test_credentials_are_required_and_checked(world: World) -> None:
    chat, spa = world.client(), world.client(public=True)
    for headers in (
        {},
        {"Authorization": "Bearer whatever"},
        basic(chat.client_id, "ent_oidc_wrong"),
        basic("no-such-client", chat.secret),
        basic(spa.client_id, None),  # a public client has no secret to prove itself with
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ):
        response = world.browser.post("/ssf/streams", json={"delivery": {"method": POLL}}, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["err"] == "authentication_failed"
        assert response.headers["www-authenticate"].startswith("Basic ")
        assert response.headers["cache-control"] == "no-store"
    assert world.browser.get("/ssf/streams", params={"stream_id": "x"}).status_code == 401
    # the caller is known before the body is read: a malformed body from a stranger is still a 401
    stranger = world.browser.post("/ssf/streams", content=b"{not json", headers=basic("x", "y"))
    assert stranger.status_code == 401


def test_another_clients_stream_is_invisible(world: World) -> None:
    chat, wiki = world.client(), world.client()
    theirs = create_stream(chat, {"method": POLL})["stream_id"]
    create_stream(wiki, {"method": PUSH, "endpoint_url": PUSH_URL})
    auth = basic(wiki.client_id, wiki.secret)
    assert [s["aud"] for s in world.browser.get("/ssf/streams", headers=auth).json()] == [wiki.client_id]
    for response in (
        world.browser.get("/ssf/streams", params={"stream_id": theirs}, headers=auth),
        world.browser.patch("/ssf/streams", json={"stream_id": theirs, "description": "mine now"}, headers=auth),
        world.browser.put("/ssf/streams", json={"stream_id": theirs, "delivery": {"method": POLL}}, headers=auth),
        world.browser.delete("/ssf/streams", params={"stream_id": theirs}, headers=auth),
        world.browser.get("/ssf/status", params={"stream_id": theirs}, headers=auth),
        world.browser.post("/ssf/status", json={"stream_id": theirs, "status": "disabled"}, headers=auth),
        world.browser.post("/ssf/verify", json={"stream_id": theirs}, headers=auth),
        world.browser.post(f"/ssf/poll/{theirs}", json={"returnImmediately": True}, headers=auth),
    ):
        assert response.status_code == 404, response.text
        assert response.json() == {"err": "not_found", "description": f"no stream '{theirs}'"}
    unknown = world.browser.get("/ssf/streams", params={"stream_id": "0" * 36}, headers=auth)
    assert unknown.status_code == 404 and unknown.json()["description"] == f"no stream '{'0' * 36}'"
    with Session(world.engine) as session:
        row = session.get(SignalStream, theirs)
        assert row is not None and row.status == "enabled" and row.description is None


def test_invalid_stream_requests(world: World) -> None:
    chat = world.client()
    auth = basic(chat.client_id, chat.secret)
    for body, words in (
        ({"delivery": {"method": PUSH}}, "endpoint_url is required"),
        ({"delivery": {"method": PUSH, "endpoint_url": "http://chat.example/events"}}, "must use https"),
        ({"delivery": {"method": "urn:example:smoke-signals"}}, "delivery.method must be"),
        ({}, "delivery.method must be"),
        ({"delivery": "push"}, "delivery"),
        ({"delivery": {"method": POLL}, "events_requested": "all"}, "events_requested"),
    ):
        response = world.browser.post("/ssf/streams", json=body, headers=auth)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["err"] == "invalid_request" and words in response.json()["description"]
    no_id = world.browser.patch("/ssf/streams", json={"description": "x"}, headers=auth)
    assert no_id.status_code == 400 and "stream_id is required" in no_id.json()["description"]
    no_param = world.browser.delete("/ssf/streams", headers=auth)
    assert no_param.status_code == 400 and "stream_id" in no_param.json()["description"]


def test_a_client_has_at_most_five_streams(world: World) -> None:
    chat = world.client()
    for _ in range(5):
        create_stream(chat, {"method": POLL})
    sixth = world.browser.post(
        "/ssf/streams", json={"delivery": {"method": POLL}}, headers=basic(chat.client_id, chat.secret)
    )
    assert sixth.status_code == 409 and sixth.json()["err"] == "conflict"
