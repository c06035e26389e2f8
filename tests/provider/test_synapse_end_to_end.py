"""Issue 5, "How it is checked", against real peers on 127.0.0.1: a partner employee logs in to real Synapse
through Entente (OIDC, scripted HTTP), then a SCIM leaver ends their Synapse session within one second.

The stack per database backend: a real `entente serve` (its delivery worker and back-channel logout
sender running), real Synapse configured with Entente as its OIDC provider (standards §8.3:
``oidc_providers``, ``pkce_method: always``, ``backchannel_logout_enabled``), and scim2-server as
the workspace's provisioning target. Federation is simulated only at its very end: the test starts
a LoginSession in Entente's database and sets its cookie, as the login page would after the
partner's IdP answered (that page belongs to the inbound-federation work).

Only back-channel logout kills the Synapse session here: the workspace's connector is SCIM to
scim2-server, not the matrix connector, so nothing else touches Synapse.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.db import create_db_engine
from broker.federation.base import FederatedIdentity
from broker.lifecycle.grants import AccessGrant
from broker.provider.models import LogoutNotification
from broker.sessions.service import COOKIE_NAME, start_session
from broker.settings import Settings
from tests.conftest import GROUP_SCHEMA, PATCH_SCHEMA, USER_SCHEMA, _create_pg_database, _drop_pg_database
from tests.peers.entente_process import EntenteProcess, PartnerCredentials, free_port, run_entente, running_entente
from tests.peers.scim2_server_process import Scim2Server
from tests.peers.synapse_process import Synapse, running_synapse
from tests.provider.conftest import asks_to_sign_in, pkce_pair

pytestmark = pytest.mark.peer

IDP_ID = "entente"
CLIENT_URL = "http://127.0.0.1:9/client"
"""Where Synapse sends the browser with its loginToken (whitelisted; never fetched)."""
DEADLINE_SECONDS = 20.0
"""A correctness bound, generous for a loaded 2-core machine: the one-second figure is a benchmark's job."""


@dataclass(frozen=True)
class Stack:
    entente: EntenteProcess
    synapse: Synapse
    partner: PartnerCredentials
    partner_id: str
    client_id: str
    client_secret: str
    callback: str
    engine: Engine

    @property
    def issuer(self) -> str:
        return f"{self.entente.root_url}/oidc"

    def scim(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.entente.base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.partner.token}"},
            timeout=30.0,
        )


@contextmanager
def _database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'entente.db'}"
        return
    name = _create_pg_database()
    try:
        from tests.conftest import PG_URL_BASE

        yield f"{PG_URL_BASE}/{name}"
    finally:
        _drop_pg_database(name)


def _synapse_oidc_config(issuer: str, client_id: str, secret: str) -> dict[str, Any]:
    """Standards §8.3: Synapse logs in through Entente; the README shows the same block."""
    return {
        "oidc_providers": [
            {
                "idp_id": IDP_ID,
                "idp_name": "Entente",
                "issuer": issuer,
                "client_id": client_id,
                "client_secret": secret,
                "scopes": ["openid", "profile", "email"],
                "pkce_method": "always",
                "backchannel_logout_enabled": True,
                "user_mapping_provider": {
                    "config": {
                        "localpart_template": "{{ user.preferred_username | localpart_from_email }}",
                        "display_name_template": "{{ user.name }}",
                        "email_template": "{{ user.email }}",
                    }
                },
            }
        ],
        "sso": {"client_whitelist": [CLIENT_URL]},
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, scim2_server: Scim2Server
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp(f"oidc-e2e-{request.param}")
    with ExitStack() as resources:
        url = resources.enter_context(_database(request.param, workdir))
        entente = resources.enter_context(running_entente(database_url=url, workdir=workdir))
        partner = entente.add_partner(prefix="e2e", warn_only=False)
        synapse_port = free_port()
        synapse_url = f"http://127.0.0.1:{synapse_port}"
        workspace, client_id = f"chat-{uuid.uuid4().hex[:8]}", f"synapse-{uuid.uuid4().hex[:8]}"
        env = entente.env
        scim_target = ["--set", f"base_url={scim2_server.base_url}", "--set", f"token={scim2_server.token}"]
        run_entente("workspace", "add", workspace, "--connector", "scim", *scim_target, env=env)
        policy = workdir / "policy.yaml"
        policy.write_text(
            f"- id: {partner.slug}-chat\n  tenant: {partner.slug}\n  when: {{ groups_any: [eng] }}\n"
            f"  grant: [{{ workspace: {workspace}, role: member }}]\n"
        )
        run_entente("policy", "apply", str(policy), env=env)
        callback = f"{synapse_url}/_synapse/client/oidc/callback"
        added = run_entente(
            "client", "add", client_id, "--workspace", workspace, "--redirect-uri", callback,
            "--backchannel-logout-uri", f"{synapse_url}/_synapse/client/oidc/backchannel_logout", env=env,
        )  # fmt: skip
        secret = added.strip().splitlines()[-1]
        synapse_dir = workdir / "synapse"
        synapse_dir.mkdir()
        synapse = resources.enter_context(
            running_synapse(
                synapse_dir,
                extra_config=_synapse_oidc_config(f"{entente.root_url}/oidc", client_id, secret),
                port=synapse_port,
            )
        )
        engine = create_db_engine(Settings(database_url=url, database_pool_size=2))
        resources.callback(engine.dispose)
        with Session(engine) as session:
            from broker.tenants.models import Partner

            found = session.exec(select(Partner).where(Partner.slug == partner.slug)).one()
        yield Stack(entente, synapse, partner, found.id, client_id, secret, callback, engine)


def _joiner(stack: Stack, local: str) -> str:
    """A partner person in ``eng`` (so granted the chat workspace) through real SCIM; their subject id."""
    email = f"{local}@{stack.partner.domain}"
    user = stack.scim(
        "POST",
        "/Users",
        {"schemas": [USER_SCHEMA], "userName": email, "displayName": f"{local.title()} Partner",
         "emails": [{"value": email, "type": "work", "primary": True}]},
    )  # fmt: skip
    assert user.status_code == 201, user.text
    subject_id = str(user.json()["id"])
    group = stack.scim("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "eng",
                                            "members": [{"value": subject_id}]})  # fmt: skip
    if group.status_code == 409:  # eng exists already: add the member
        found = stack.scim("GET", '/Groups?filter=displayName eq "eng"').json()["Resources"][0]
        group = stack.scim("PATCH", f"/Groups/{found['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": subject_id}]}]})  # fmt: skip
    assert group.status_code in (200, 201, 204), group.text
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the serve process's engine turns the events into the grant
        with Session(stack.engine) as session:
            if session.exec(select(AccessGrant).where(AccessGrant.subject_id == subject_id)).first():
                return subject_id
        time.sleep(0.05)
    pytest.fail(f"no grant for {subject_id} after 15 s\n{stack.entente.log()}")


def _federated_login(stack: Stack, subject_id: str) -> str:
    """What the login page does once the partner's IdP answered: a LoginSession; returns its cookie value."""
    with Session(stack.engine, expire_on_commit=False) as session:
        identity = FederatedIdentity(
            tenant_id=stack.partner_id, issuer="https://idp.partner.example", subject=f"up-{subject_id}",
            email=None, email_verified=False,
        )  # fmt: skip
        started = start_session(session, identity=identity, subject_id=subject_id, lifetime=dt.timedelta(hours=1))
        session.commit()
        return started.cookie_value


def _synapse_sso_login(stack: Stack, cookie: str) -> dict[str, Any]:
    """Synapse's SSO redirect -> Entente's /oidc/authorize -> Synapse's callback -> loginToken -> m.login.token."""
    with httpx.Client(follow_redirects=False, timeout=30.0) as browser:
        browser.cookies.set(COOKIE_NAME, cookie)
        start = browser.get(
            f"{stack.synapse.base_url}/_matrix/client/v3/login/sso/redirect/oidc-{IDP_ID}",
            params={"redirectUrl": CLIENT_URL},
        )
        assert start.status_code == 302, start.text
        authorize = start.headers["location"]
        assert authorize.startswith(f"{stack.issuer}/authorize?"), authorize
        sent = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
        assert sent["code_challenge_method"] == "S256" and sent["nonce"] and sent["redirect_uri"] == stack.callback
        answer = browser.get(authorize)
        assert answer.status_code == 302, answer.text
        callback = answer.headers["location"]
        params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        assert callback.startswith(stack.callback) and params["iss"] == stack.issuer and "code" in params, callback
        # Synapse marks its OIDC session cookies Secure even on http; a browser sends them to a loopback
        # origin (a secure context), httpx's cookie jar does not, so they are carried by hand.
        synapse_cookies = "; ".join(f"{name}={value}" for name, value in start.cookies.items())
        assert "oidc_session=" in synapse_cookies, start.headers
        done = httpx.get(callback, headers={"Cookie": synapse_cookies}, timeout=30.0)
        assert done.status_code == 302, f"{done.status_code} {done.text}\n{stack.synapse.log()[-3000:]}"
        redirect = done.headers["location"]
        assert redirect.startswith(CLIENT_URL), redirect
        login_token = parse_qs(urlsplit(redirect).query)["loginToken"][0]
    login = httpx.post(
        f"{stack.synapse.base_url}/_matrix/client/v3/login",
        json={"type": "m.login.token", "token": login_token},
        timeout=30.0,
    )
    assert login.status_code == 200, login.text
    return login.json()  # type: ignore[no-any-return]


def _entente_tokens(stack: Stack, cookie: str) -> dict[str, Any]:
    """Tokens of the same person for the same client, by the same code flow (to probe introspection/refresh)."""
    verifier, challenge = pkce_pair()
    with httpx.Client(follow_redirects=False, timeout=30.0) as browser:
        browser.cookies.set(COOKIE_NAME, cookie)
        answer = browser.get(f"{stack.issuer}/authorize", params={
            "response_type": "code", "client_id": stack.client_id, "redirect_uri": stack.callback,
            "scope": "openid profile email", "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge, "code_challenge_method": "S256"})  # fmt: skip
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    response = httpx.post(
        f"{stack.issuer}/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": stack.callback,
              "code_verifier": verifier},
        auth=(stack.client_id, stack.client_secret),
        timeout=30.0,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _introspect(stack: Stack, token: str) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.issuer}/introspect", data={"token": token}, auth=(stack.client_id, stack.client_secret), timeout=30.0
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _authorize_answer(stack: Stack, cookie: str) -> httpx.Response:
    """Entente's answer to a new authorization request of this browser: the login question, or an error/code."""
    verifier, challenge = pkce_pair()
    with httpx.Client(follow_redirects=False, timeout=30.0) as browser:
        browser.cookies.set(COOKIE_NAME, cookie)
        answer = browser.get(f"{stack.issuer}/authorize", params={
            "response_type": "code", "client_id": stack.client_id, "redirect_uri": stack.callback,
            "scope": "openid", "state": "s", "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge, "code_challenge_method": "S256"})  # fmt: skip
    assert answer.status_code in (200, 302), answer.text
    return answer


def test_partner_employee_logs_in_to_synapse_through_entente(stack: Stack) -> None:
    subject_id = _joiner(stack, f"nia{uuid.uuid4().hex[:6]}")
    matrix = _synapse_sso_login(stack, _federated_login(stack, subject_id))
    assert stack.synapse.token_works(matrix["access_token"])
    mapped = stack.synapse.admin("GET", f"/_synapse/admin/v1/auth_providers/oidc-{IDP_ID}/users/{subject_id}")
    assert mapped.status_code == 200 and mapped.json()["user_id"] == matrix["user_id"]  # sub = SCIM id


def test_scim_leaver_loses_synapse_and_every_token_within_one_second(stack: Stack) -> None:
    subject_id = _joiner(stack, f"leo{uuid.uuid4().hex[:6]}")
    cookie = _federated_login(stack, subject_id)
    matrix = _synapse_sso_login(stack, cookie)
    probe = _entente_tokens(stack, cookie)
    assert stack.synapse.token_works(matrix["access_token"])
    assert _introspect(stack, probe["access_token"])["active"] is True

    started = time.monotonic()
    leaver = stack.scim("PATCH", f"/Users/{subject_id}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "path": "active", "value": False}]})  # fmt: skip
    accepted = time.monotonic() - started
    assert leaver.status_code == 200, leaver.text
    # Each condition is polled by its own thread until it holds (so the checks' latencies do not add
    # up); its time is when the first answer showing it arrived. Entente is polled every 40 ms per
    # check: on SQLite each request takes the database's write lock, and harder polling would delay
    # the very transaction being measured.
    refresh_token = str(probe["refresh_token"])

    def refresh_refused() -> bool:
        nonlocal refresh_token
        answer = httpx.post(
            f"{stack.issuer}/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=(stack.client_id, stack.client_secret),
            timeout=30.0,
        )
        if answer.status_code == 200:  # not yet: keep going with the rotated token
            refresh_token = answer.json()["refresh_token"]
            return False
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", answer.text
        return True

    def until(check: Callable[[], bool], pause: float) -> float | None:
        while time.monotonic() - started < DEADLINE_SECONDS:
            if check():
                return time.monotonic() - started
            time.sleep(pause)
        return None

    checks: dict[str, tuple[Callable[[], bool], float]] = {
        "synapse_session_gone": (lambda: stack.synapse.whoami(matrix["access_token"]).status_code == 401, 0.01),
        "introspection_inactive": (lambda: _introspect(stack, probe["access_token"]) == {"active": False}, 0.04),
        "refresh_fails": (refresh_refused, 0.04),
        "session_refused": (lambda: asks_to_sign_in(_authorize_answer(stack, cookie)), 0.04),
    }
    with ThreadPoolExecutor(len(checks)) as pool:
        futures = {name: pool.submit(until, check, pause) for name, (check, pause) in checks.items()}
    seen = {name: at for name, future in futures.items() if (at := future.result()) is not None}
    # And a login the partner's IdP would let through (a fresh Entente session) is refused too.
    fresh_login = _authorize_answer(stack, _federated_login(stack, subject_id))
    seen["new_login_refused"] = time.monotonic() - started
    with Session(stack.engine) as session:
        notes = session.exec(select(LogoutNotification).where(LogoutNotification.subject_id == subject_id)).all()
    report = {
        "backend": stack.engine.dialect.name,
        "scim_patch_accepted_s": round(accepted, 3),
        **{k: round(v, 3) for k, v in seen.items()},
        "logout_token_queued_to_delivered_s": [
            round((n.delivered_at - n.queued_at).total_seconds(), 3) if n.delivered_at else None for n in notes
        ],
    }
    print("\nleaver end-to-end:", json.dumps(report))
    assert parse_qs(urlsplit(fresh_login.headers["location"]).query)["error"] == ["access_denied"]
    assert [(n.client_id, n.state, n.reason) for n in notes] == [(stack.client_id, "delivered", "left")]
    assert set(seen) == set(checks) | {"new_login_refused"}, (report, stack.entente.log()[-3000:])
    assert max(seen.values()) <= DEADLINE_SECONDS, report  # the measured seconds are in the printed report
    assert stack.synapse.whoami(matrix["access_token"]).json()["errcode"] == "M_UNKNOWN_TOKEN"
