"""The token endpoint's code exchange: RFC 6749 §4.1.3–§5.2, RFC 7636 §4.5–§4.6, OIDC Core §3.1.3 ID tokens."""

from __future__ import annotations

import base64
import hashlib

from sqlmodel import Session

from broker.provider.models import AuthorizationCode
from broker.sessions.models import LoginSession
from broker.types import utcnow
from tests.provider.conftest import ISSUER, World, verify_jwt


def _error(response, error: str, status: int = 400) -> None:  # type: ignore[no-untyped-def]
    """RFC 6749 §5.2: JSON body with ``error``, never cached."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == error, response.json()


def test_code_exchange_gives_tokens_and_a_verified_id_token(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client()
    response = rp.exchange(rp.code())
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300
    assert tokens["refresh_token"].startswith("ent_rt_")
    claims = verify_jwt(
        world.browser, tokens["id_token"], typ="JWT", iss=ISSUER, aud=rp.client_id, sub=alice["id"], nonce=rp.nonce
    )
    assert claims["sid"] == sid
    assert claims["partner"] == world.partner.slug
    assert claims["groups"] == ["eng"] and claims["roles"] == ["member"]
    assert claims["email"] == world.partner.email("alice") and claims["email_verified"] is True
    assert claims["preferred_username"] == world.partner.email("alice")
    assert claims["name"] == "Alice Example" and claims["given_name"] == "Alice"
    assert 0 < claims["exp"] - claims["iat"] <= 300 and claims["auth_time"] <= claims["iat"]
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()  # OIDC Core §3.1.3.6
    access = verify_jwt(world.browser, tokens["access_token"], typ="at+jwt", iss=ISSUER, aud=rp.client_id)
    assert access["sub"] == alice["id"] and access["client_id"] == rp.client_id and access["jti"]
    assert access["scope"] == "openid profile email" and access["exp"] - access["iat"] == 300


def test_scopes_decide_the_identity_claims(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    claims = verify_jwt(world.browser, rp.login_flow(scope="openid")["id_token"], typ="JWT", aud=rp.client_id)
    assert "email" not in claims and "name" not in claims
    assert {"sub", "partner", "groups", "roles", "sid"} <= set(claims)


def test_oauth_without_openid_gets_no_id_token(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow(scope="profile", nonce=None)
    assert "id_token" not in tokens and tokens["access_token"]


def test_client_secret_post_authenticates_too(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    response = world.browser.post(
        "/oidc/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": rp.redirect_uri,
            "code_verifier": rp.verifier,
            "client_id": rp.client_id,
            "client_secret": rp.secret,
        },
    )
    assert response.status_code == 200, response.text


def test_wrong_secret_is_invalid_client_401_with_a_basic_challenge(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    rp.secret = "ent_oidc_wrong"
    response = rp.exchange(code)
    _error(response, "invalid_client", 401)
    assert response.headers["www-authenticate"].startswith("Basic ")


def test_confidential_client_cannot_skip_authentication(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    response = world.browser.post(
        "/oidc/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
              "code_verifier": rp.verifier, "client_id": rp.client_id},
    )  # fmt: skip
    _error(response, "invalid_client", 401)


def test_code_reuse_is_invalid_grant_and_revokes_what_the_code_gave(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    first = rp.exchange(code)
    assert first.status_code == 200
    tokens = first.json()
    assert rp.introspect(tokens["access_token"])["active"] is True
    _error(rp.exchange(code), "invalid_grant")
    assert rp.introspect(tokens["access_token"]) == {"active": False}
    _error(rp.refresh(tokens["refresh_token"]), "invalid_grant")


def test_a_code_from_a_login_session_ended_before_the_exchange_is_invalid_grant(world: World) -> None:
    """The session's liveness is read with the code: a logout (or a leave) between the authorization
    response and the exchange leaves the code worth nothing."""
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    with Session(world.engine) as session:
        login = session.get(LoginSession, sid)
        assert login is not None
        login.ended_at, login.end_reason = utcnow(), "logout"
        session.add(login)
        session.commit()
    _error(rp.exchange(code), "invalid_grant")


def test_pkce_mismatch_is_invalid_grant(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    _error(rp.exchange(code, code_verifier="x" * 64), "invalid_grant")
    _error(rp.exchange(code, code_verifier=None), "invalid_request")
    assert rp.exchange(code).status_code == 200  # a refused attempt does not burn the code


def test_public_client_exchanges_with_pkce_and_no_secret(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client(public=True)
    code = rp.code()
    _error(rp.exchange(code, code_verifier=None), "invalid_request")
    response = rp.exchange(code)
    assert response.status_code == 200, response.text
    assert "id_token" in response.json()


def test_verifier_without_a_challenge_is_refused(world: World) -> None:
    """RFC 9700 §4.8.2: a code_verifier where no code_challenge was sent is a downgrade attempt."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code(code_challenge=None, code_challenge_method=None)
    _error(rp.exchange(code, code_verifier="y" * 50), "invalid_request")


def test_redirect_uri_must_be_the_one_of_the_authorization_request(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    _error(rp.exchange(code, redirect_uri=rp.redirect_uri + "/other"), "invalid_grant")
    _error(rp.exchange(code, redirect_uri=None), "invalid_grant")


def test_expired_code_is_invalid_grant(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    world.expire(AuthorizationCode, code)
    _error(rp.exchange(code), "invalid_grant")


def test_another_clients_code_is_invalid_grant(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp, other = world.client(), world.client()
    code = rp.code()
    other.verifier = rp.verifier
    _error(other.exchange(code, redirect_uri=rp.redirect_uri), "invalid_grant")


def test_person_who_lost_access_before_the_exchange_gets_nothing(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    code = rp.code()
    response = world.partner.client.patch(
        f"/Groups/{world.eng_group['id']}",
        json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
              "Operations": [{"op": "remove", "path": f'members[value eq "{alice["id"]}"]'}]},
    )  # fmt: skip
    assert response.status_code in (200, 204)
    world.regrant()
    _error(rp.exchange(code), "invalid_grant")


def test_malformed_token_requests(world: World) -> None:
    rp = world.client()
    _error(rp.token({"grant_type": "password", "username": "a", "password": "b"}), "unsupported_grant_type")
    _error(rp.token({"grant_type": "authorization_code"}), "invalid_request")
    _error(rp.token({"grant_type": "authorization_code", "code": "nope", "redirect_uri": rp.redirect_uri}),
           "invalid_grant")  # fmt: skip
    json_body = world.browser.post(
        "/oidc/token", json={"grant_type": "authorization_code"}, auth=(rp.client_id, rp.secret or "")
    )
    _error(json_body, "invalid_request")
    repeated = world.browser.post(
        "/oidc/token",
        content="grant_type=authorization_code&code=a&code=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(rp.client_id, rp.secret or ""),
    )
    _error(repeated, "invalid_request")


def test_id_token_groups_resolve_nesting_as_the_engine_does(world: World) -> None:
    """``load_person`` (the token path's one-person Core loader) gives the facts ``load_people`` gives:
    groups through nesting (a cycle included), emails, attributes."""

    from broker.lifecycle.facts import load_people, load_person

    alice = world.person("alice")
    team = world.partner.create_group("platform", members=[alice["id"]])
    org = world.partner.create_group("engineering-org", members=[team["id"]])
    world.partner.create_group("company", members=[org["id"]])
    looping = world.partner.create_group("loop-a", members=[alice["id"]])
    other = world.partner.create_group("loop-b", members=[looping["id"]])
    response = world.partner.client.patch(
        f"/Groups/{looping['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": other["id"]}]}],
        },
    )
    assert response.status_code in (200, 204), response.text
    world.partner.create_group("unrelated")
    with Session(world.engine) as session:
        one = load_person(session, partner_id=world.partner.id, subject_id=alice["id"])
        many = load_people(session, partner_id=world.partner.id, subject_ids=[alice["id"]])
        assert load_person(session, partner_id=world.partner.id, subject_id="nobody") is None
    assert one is not None and one == many[alice["id"]]
    assert one.facts.groups == {"eng", "platform", "engineering-org", "company", "loop-a", "loop-b"}
    world.login(alice["id"])
    rp = world.client()
    claims = verify_jwt(world.browser, rp.login_flow()["id_token"], typ="JWT", aud=rp.client_id)
    assert claims["groups"] == sorted(one.facts.groups)
