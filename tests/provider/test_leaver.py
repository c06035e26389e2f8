"""Session kill on leave: the lifecycle engine's leaver ends sessions, tokens and RP sessions at once."""

from __future__ import annotations

from sqlmodel import Session, col, select

from broker.audit.log import AuditRecord
from broker.provider.models import LogoutNotification, TokenFamily
from broker.provider.revocation import revoke_people, revoke_person
from broker.sessions.models import LoginSession
from tests.conftest import PATCH_SCHEMA
from tests.lifecycle.helpers import run_engine
from tests.provider.conftest import World, asks_to_sign_in, query_of


def _deactivate(world: World, subject_id: str) -> None:
    response = world.partner.client.patch(
        f"/Users/{subject_id}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]},
    )
    assert response.status_code == 200, response.text


def _sessions(world: World, subject_id: str) -> list[LoginSession]:
    with Session(world.engine) as session:
        return list(session.exec(select(LoginSession).where(LoginSession.subject_id == subject_id)).all())


def _notifications(world: World, subject_id: str) -> list[tuple[str, str, str]]:
    with Session(world.engine) as session:
        rows = session.exec(
            select(LogoutNotification)
            .where(LogoutNotification.subject_id == subject_id)
            .order_by(col(LogoutNotification.client_id), col(LogoutNotification.sid))
        ).all()
        return [(n.client_id, n.sid, n.reason) for n in rows]


def test_scim_leaver_kills_every_session_token_and_rp_session(world: World) -> None:
    alice = world.person("alice")
    laptop = world.login(alice["id"])
    chat = world.client(backchannel="http://127.0.0.1:9/bcl")
    wiki = world.client()  # no back-channel logout: its tokens die, nobody is told
    chat_tokens, wiki_tokens = chat.login_flow(), wiki.login_flow()
    from fastapi.testclient import TestClient

    phone_browser = TestClient(world.browser.app, base_url="http://localhost", follow_redirects=False)
    phone = world.login(alice["id"], browser=phone_browser)
    chat.browser = phone_browser
    phone_tokens = chat.login_flow()
    chat.browser = world.browser

    _deactivate(world, alice["id"])
    assert run_engine(world.engine) >= 1

    assert {(s.id, s.end_reason) for s in _sessions(world, alice["id"])} == {(laptop, "left"), (phone, "left")}
    for rp, tokens in ((chat, chat_tokens), (wiki, wiki_tokens), (chat, phone_tokens)):
        assert rp.introspect(tokens["access_token"]) == {"active": False}
        assert rp.introspect(tokens["refresh_token"]) == {"active": False}
        refreshed = rp.refresh(tokens["refresh_token"])
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        userinfo = world.browser.get("/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert userinfo.status_code == 401
    assert _notifications(world, alice["id"]) == sorted(
        [(chat.client_id, laptop, "left"), (chat.client_id, phone, "left")]
    )
    # A new login is refused: the old cookie names an ended session, and a fresh one is not admitted.
    assert asks_to_sign_in(chat.authorize())
    world.login(alice["id"])
    assert query_of(chat.authorize())["error"] == "access_denied"
    phone_browser.close()
    with Session(world.engine) as session:
        audited = session.exec(
            select(AuditRecord).where(
                AuditRecord.action == "oidc.sessions_revoked", AuditRecord.resource_id == alice["id"]
            )
        ).all()
        assert len(audited) == 1 and audited[0].detail["reason"] == "left"
        assert audited[0].detail["sessions"] == 2 and audited[0].detail["families"] == 3


def test_revoke_person_is_idempotent(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    chat = world.client(backchannel="http://127.0.0.1:9/bcl")
    chat.login_flow()
    with Session(world.engine) as session:
        first = revoke_person(session, partner_id=world.partner.id, subject_id=alice["id"], reason="kill_switch")
        session.commit()
        again = revoke_person(session, partner_id=world.partner.id, subject_id=alice["id"], reason="kill_switch")
        session.commit()
    assert (first.sessions, first.families, first.logouts) == (1, 1, 1)
    assert (again.sessions, again.families, again.logouts) == (0, 0, 0)
    assert len(_notifications(world, alice["id"])) == 1


def test_deleted_person_is_revoked_too(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    chat = world.client(backchannel="http://127.0.0.1:9/bcl")
    tokens = chat.login_flow()
    assert world.partner.client.delete(f"/Users/{alice['id']}").status_code == 204
    run_engine(world.engine)
    assert [s.end_reason for s in _sessions(world, alice["id"])] == ["left"]
    assert chat.introspect(tokens["access_token"]) == {"active": False}
    assert _notifications(world, alice["id"]) == [(chat.client_id, sid, "left")]


def test_people_with_nothing_live_cost_nothing(world: World) -> None:
    bob = world.person("bob")
    with Session(world.engine) as session:
        assert (
            revoke_people(session, partner_id=world.partner.id, subject_ids=[bob["id"], "nobody"], reason="left") == 0
        )
        assert not session.new and not session.dirty
        session.rollback()


def test_a_mover_keeps_the_session_but_gets_no_more_tokens_for_the_lost_workspace(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    chat = world.client()
    tokens = chat.login_flow()
    response = world.partner.client.patch(
        f"/Groups/{world.eng_group['id']}",
        json={"schemas": [PATCH_SCHEMA],
              "Operations": [{"op": "remove", "path": f'members[value eq "{alice["id"]}"]'}]},
    )  # fmt: skip
    assert response.status_code in (200, 204)
    run_engine(world.engine)
    assert [s.ended_at for s in _sessions(world, alice["id"]) if s.id == sid] == [None]
    assert chat.introspect(tokens["access_token"]) == {"active": False}
    assert query_of(chat.authorize())["error"] == "access_denied"
    assert chat.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    with Session(world.engine) as session:
        family = session.exec(select(TokenFamily).where(TokenFamily.subject_id == alice["id"])).one()
        assert family.revoke_reason == "access_ended"
