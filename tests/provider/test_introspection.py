"""RFC 7662 token introspection, for confidential clients of the token's workspace."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update
from sqlmodel import Session

from broker.provider.models import AccessToken
from tests.lifecycle.helpers import new_workspace
from tests.provider.conftest import ISSUER, World, verify_jwt


def test_active_access_and_refresh_tokens(world: World) -> None:
    alice = world.person("alice")
    sid = world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    jti = verify_jwt(world.browser, tokens["access_token"], typ="at+jwt")["jti"]
    body = rp.introspect(tokens["access_token"])
    assert body["active"] is True and body["token_type"] == "Bearer" and body["jti"] == jti
    assert body["client_id"] == rp.client_id and body["sub"] == alice["id"] and body["iss"] == ISSUER
    assert body["username"] == world.partner.email("alice") and body["sid"] == sid
    assert body["scope"] == "openid profile email" and body["exp"] > body["iat"]
    refresh = rp.introspect(tokens["refresh_token"], token_type_hint="refresh_token")
    assert refresh["active"] is True and "token_type" not in refresh and refresh["sub"] == alice["id"]


def test_a_resource_server_of_the_same_workspace_may_introspect(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp, resource_server = world.client(), world.client()
    tokens = rp.login_flow()
    assert resource_server.introspect(tokens["access_token"])["active"] is True


def test_a_client_of_another_workspace_learns_nothing(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    outsider = world.client(workspace=new_workspace(world.engine, world.settings))
    tokens = rp.login_flow()
    assert outsider.introspect(tokens["access_token"]) == {"active": False}


def test_expired_forged_and_unknown_tokens_are_inactive(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    tokens = rp.login_flow()
    header, payload, signature = tokens["access_token"].split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert rp.introspect(forged) == {"active": False}
    assert rp.introspect("garbage") == {"active": False}
    jti = verify_jwt(world.browser, tokens["access_token"], typ="at+jwt")["jti"]
    with Session(world.engine) as session:
        table = AccessToken.__table__  # type: ignore[attr-defined]
        session.execute(
            update(table).where(table.c.jti == jti).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
        session.commit()
    assert rp.introspect(tokens["access_token"]) == {"active": False}


def test_introspection_is_for_authenticated_confidential_clients(world: World) -> None:
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    public = world.client(public=True)
    tokens = rp.login_flow()
    anonymous = world.browser.post("/oidc/introspect", data={"token": tokens["access_token"]})
    assert anonymous.status_code in (400, 401) and anonymous.json()["error"] == "invalid_client"
    by_public = world.browser.post(
        "/oidc/introspect", data={"token": tokens["access_token"], "client_id": public.client_id}
    )
    assert by_public.status_code in (400, 401) and by_public.json()["error"] == "invalid_client"
    no_token = world.browser.post("/oidc/introspect", data={}, auth=(rp.client_id, rp.secret or ""))
    assert no_token.status_code == 400 and no_token.json()["error"] == "invalid_request"
