"""OIDC RP-Initiated Logout 1.0, and Back-Channel Logout 1.0 logout tokens delivered by the sender."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
from fastapi.testclient import TestClient
from joserfc import jwt
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.audit.log import AuditRecord
from broker.provider.logout import BACKCHANNEL_EVENT, LogoutSender, subscribe, unsubscribe
from broker.provider.models import LogoutNotification, TokenFamily
from broker.provider.revocation import end_login_session
from broker.sessions.models import LoginSession
from tests.provider.conftest import ISSUER, World, asks_to_sign_in, jwks

BCL_URI = "http://127.0.0.1:9/backchannel"  # nothing listens: a stray real send fails at once


def _session_row(engine: Engine, sid: str) -> LoginSession:
    with Session(engine) as session:
        row = session.get(LoginSession, sid)
        assert row is not None
        return row


def _notifications(engine: Engine, sid: str) -> list[LogoutNotification]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(LogoutNotification).where(LogoutNotification.sid == sid).order_by(col(LogoutNotification.id))
            ).all()
        )


def test_logout_with_id_token_hint_ends_the_session_and_tells_the_other_rps(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client(post_logout=("https://rp.example/bye",))
    chat = world.client(backchannel=BCL_URI)
    tokens, chat_tokens = rp.login_flow(), chat.login_flow()
    response = world.browser.get(
        "/oidc/logout",
        params={
            "id_token_hint": tokens["id_token"],
            "client_id": rp.client_id,
            "post_logout_redirect_uri": "https://rp.example/bye",
            "state": "s1",
        },
    )
    assert response.status_code == 302
    assert response.headers["location"] == "https://rp.example/bye?state=s1"
    assert "entente_session=;" in response.headers["set-cookie"] and "Max-Age=0" in response.headers["set-cookie"]
    row = _session_row(world.engine, sid)
    assert row.ended_at is not None and row.end_reason == "logout"
    assert rp.introspect(tokens["access_token"]) == {"active": False}
    assert chat.refresh(chat_tokens["refresh_token"]).status_code == 400
    assert [(n.client_id, n.reason, n.state) for n in _notifications(world.engine, sid)] == [
        (chat.client_id, "logout", "pending")
    ]


def test_logout_without_a_hint_asks_for_confirmation(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    page = world.browser.get("/oidc/logout")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'method="post"' in page.text and 'name="confirm"' in page.text
    assert _session_row(world.engine, sid).ended_at is None
    forged = world.browser.post("/oidc/logout", data={"confirm": "guess"})
    assert forged.status_code == 200 and 'name="confirm"' in forged.text  # asked again, nothing ended
    assert _session_row(world.engine, sid).ended_at is None
    confirm = page.text.split('name="confirm" value="')[1].split('"')[0]
    done = world.browser.post("/oidc/logout", data={"confirm": confirm})
    assert done.status_code == 200 and "signed out" in done.text
    assert _session_row(world.engine, sid).end_reason == "logout"


def test_invalid_hint_or_mismatched_client_is_an_error_without_redirect(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp, other = world.client(post_logout=("https://rp.example/bye",)), world.client()
    tokens = rp.login_flow()
    forged = tokens["id_token"][:-6] + "AAAAAA"
    bad = world.browser.get(
        "/oidc/logout", params={"id_token_hint": forged, "post_logout_redirect_uri": "https://rp.example/bye"}
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request" and "location" not in bad.headers
    mismatch = world.browser.get(
        "/oidc/logout", params={"id_token_hint": tokens["id_token"], "client_id": other.client_id}
    )
    assert mismatch.status_code == 400
    assert _session_row(world.engine, sid).ended_at is None


def test_unregistered_post_logout_redirect_uri_is_not_followed(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(post_logout=("https://rp.example/bye",))
    tokens = rp.login_flow()
    response = world.browser.get(
        "/oidc/logout",
        params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://evil.example/"},
    )
    assert response.status_code == 200 and "signed out" in response.text


def test_after_logout_authorize_sends_to_login(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    world.browser.get("/oidc/logout", params={"id_token_hint": tokens["id_token"]})
    world.browser.cookies.clear()  # the Set-Cookie above; a browser keeping the old value gets the same answer
    assert asks_to_sign_in(rp.authorize())


# -- the sender --------------------------------------------------------------------------------------
def _queue(world: World) -> tuple[str, str, str]:
    """A person with a session at a BCL client (at ``BCL_URI``/<client_id>), logged out: (client_id, sid, subject)."""
    alice = world.person("alice")
    sid = world.login(alice["id"])
    chat = world.client(backchannel=BCL_URI)
    chat.login_flow()
    with Session(world.engine) as session:
        end_login_session(session, session_id=sid, reason="logout")
        session.commit()
    return chat.client_id, sid, alice["id"]


def _send(world: World, handler: Callable[[httpx.Request], httpx.Response], sid: str) -> None:
    """Run the sender until the notification of ``sid`` was attempted (other tests' leftovers get 200)."""
    engine, settings, jwks_set = world.engine, world.settings, jwks(world.browser)

    def route(request: httpx.Request) -> httpx.Response:
        ours = parse_qs(request.content.decode()).get("logout_token", [""])[0]
        claims = jwt.decode(ours, jwks_set, algorithms=["RS256"]).claims if ours else {}
        return handler(request) if claims.get("sid") == sid else httpx.Response(200)

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as http:
            sender = LogoutSender(engine=engine, settings=settings, http=http)
            attempts = sum(n.attempts for n in _notifications(engine, sid))
            for _ in range(50):
                await sender.run_once()
                if sum(n.attempts for n in _notifications(engine, sid)) > attempts:
                    return

    asyncio.run(run())


def test_sender_posts_a_valid_logout_token(world: World) -> None:
    client_id, sid, subject = _queue(world)
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    _send(world, receiver, sid)
    assert len(received) == 1
    request = received[0]
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    token = parse_qs(request.content.decode())["logout_token"][0]
    decoded = jwt.decode(token, jwks(world.browser), algorithms=["RS256"])
    assert decoded.header["typ"] == "logout+jwt"
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": client_id},
        sub={"essential": True, "value": subject},
        sid={"essential": True, "value": sid},
        jti={"essential": True},
        iat={"essential": True},
    ).validate(decoded.claims)
    assert decoded.claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert "nonce" not in decoded.claims and decoded.claims["exp"] - decoded.claims["iat"] == 120
    [note] = _notifications(world.engine, sid)
    assert note.state == "delivered" and note.delivered_at is not None and note.jti == decoded.claims["jti"]
    with Session(world.engine) as session:
        audited = session.exec(
            select(AuditRecord).where(
                AuditRecord.action == "oidc.backchannel_logout", AuditRecord.resource_id == client_id
            )
        ).all()
    assert len(audited) == 1 and audited[0].detail["sid"] == sid


def test_sender_retries_transient_failures_with_the_same_jti(world: World) -> None:
    _, sid, _ = _queue(world)
    answers = iter([httpx.Response(503), httpx.Response(204)])
    jtis: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        token = parse_qs(request.content.decode())["logout_token"][0]
        jtis.append(jwt.decode(token, jwks(world.browser), algorithms=["RS256"]).claims["jti"])
        return next(answers)

    _send(world, flaky, sid)
    [note] = _notifications(world.engine, sid)
    assert note.state == "pending" and note.attempts == 1 and "503" in (note.last_error or "")
    with Session(world.engine) as session:
        table = LogoutNotification.__table__  # type: ignore[attr-defined]
        session.execute(update(table).where(table.c.id == note.id).values(not_before=dt.datetime.now(dt.UTC)))
        session.commit()
    _send(world, flaky, sid)
    [note] = _notifications(world.engine, sid)
    assert note.state == "delivered" and note.attempts == 2
    assert len(jtis) == 2 and jtis[0] == jtis[1]


def test_sender_buries_a_refused_logout_token(world: World) -> None:
    client_id, sid, _ = _queue(world)
    _send(world, lambda request: httpx.Response(400, json={"error": "invalid_request"}), sid)
    [note] = _notifications(world.engine, sid)
    assert note.state == "dead" and "400" in (note.last_error or "")
    with Session(world.engine) as session:
        failed = session.exec(
            select(AuditRecord).where(
                AuditRecord.action == "oidc.backchannel_logout_failed", AuditRecord.resource_id == client_id
            )
        ).all()
    assert len(failed) == 1


def test_a_commit_that_queues_logouts_wakes_the_sender(world: World) -> None:
    woken: list[int] = []
    callback = lambda: woken.append(1)  # noqa: E731
    subscribe(callback)
    try:
        _queue(world)
    finally:
        unsubscribe(callback)
    assert woken == [1]


def test_logout_of_a_session_without_families_queues_nothing(world: World, browser: TestClient) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    world.client(backchannel=BCL_URI)
    with Session(world.engine) as session:
        result = end_login_session(session, session_id=sid, reason="logout")
        session.commit()
        assert session.exec(select(TokenFamily).where(TokenFamily.session_id == sid)).all() == []
    assert (result.sessions, result.families, result.logouts) == (1, 0, 0)
    assert _notifications(world.engine, sid) == []
