"""Federated-login benchmark (issue 5): the latency Entente adds to a login, and refresh grants per second.

Everything runs as real processes on 127.0.0.1:

- the partner's IdP: npm oidc-provider, the federation tests' peer (``tests/peers/oidc_provider/idp.mjs``)
  preloaded with ``bench-rotation.mjs``, which only adds ``rotateRefreshToken: true`` so its refresh
  grants rotate like Entente's;
- Entente: a fresh database (SQLite file or a new PostgreSQL database) set up through the ``entente``
  CLI as an operator would (``migrate``, ``partner add``/``token``, ``workspace add`` with a webhook
  connector aimed at a receiver inside this script, ``policy apply`` granting group ``eng`` the
  workspace, ``client add`` for the workspace's OIDC client, ``idp add`` after registering Entente's
  client at the IdP by RFC 7591), then ``entente serve``; one person arrives by SCIM (``externalId`` =
  their ``sub`` at the IdP) in group ``eng``.

Phase 1, login latency. ``--logins`` times each, interleaved (Entente, upstream, Entente, ...) so that
load changes on a shared machine hit both alike, and each with a fresh cookie jar (connections are
kept alive across logins, as a browser keeps them):

- through Entente: the workspace client's authorization request at Entente's ``/oidc/authorize``
  (which asks the email question in place) -> POST of the email to ``/login`` (home-realm discovery,
  a 303 to the IdP) -> the IdP (devInteractions login and consent forms) ->
  ``/login/callback/bench.oidc`` (Entente redeems the IdP's code, checks the ID token, fetches
  userinfo when binding needs it, binds, starts the session and answers the authorization request:
  a 303 to the workspace's redirect URI with the code) -> the token exchange at Entente's
  ``/oidc/token``;
- upstream alone: the same scripted login directly at the IdP with a client of its own (same scope,
  PKCE), ending with its token exchange at the IdP.

Entente-added latency = the difference of the two medians (and of p90/p99). Entente's own share is
also measured from its side: every request to Entente carries an ``X-Request-ID`` and Entente's access
log records its ``duration_ms``, so the bench sums them per login (the callback's duration includes
Entente's back-channel calls to the IdP: token and userinfo). Server CPU per login comes from /proc.

Phase 2, refresh grants. ``--chains`` concurrent chains, each one client connection (bench/loadgen.py's
lean keep-alive HTTP/1.1 connection) sending ``grant_type=refresh_token`` with the refresh token the
previous grant returned, for ``--refresh-seconds`` (after a one-second warm-up): grants/s, latency and
server CPU ms per grant (/proc), at Entente's ``/oidc/token`` and then at oidc-provider's ``/token``
(confidential clients, ``client_secret_basic``, both rotating). ``--py-spy DIR`` samples ``entente
serve`` in both phases (``py-spy record --gil``; sampling slows the server, so such a run is for
the profile, not the figures) and stores the hottest frames; ``--workers N`` serves with N processes.

    python bench/login.py --database sqlite
    python bench/login.py --database postgresql --logins 20 --refresh-seconds 5    # a quick check

Results go to bench/results/login-<db>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    BIN,
    Profiler,
    cpu_seconds,
    drop_database,
    entente,
    free_port,
    git_state,
    new_database,
    process_tree,
    stop,
    summary,
    wait_http,
)
from bench.loadgen import _Connection  # noqa: E402  (one keep-alive connection; run_requests cannot chain)
from broker.db import create_db_engine  # noqa: E402
from broker.lifecycle.grants import AccessGrant  # noqa: E402
from broker.settings import Settings  # noqa: E402

IDP_DIR = ROOT / "tests" / "peers" / "oidc_provider"
DOMAIN = "login-bench.test"
PARTNER = "bench"
SCOPE = "openid email profile"
WORKSPACE_REDIRECT = "http://127.0.0.1:9/workspace/callback"
"""Where Entente sends the browser with the workspace's code (never fetched: the script reads the Location)."""
UPSTREAM_REDIRECT = "http://127.0.0.1:9/upstream/callback"
"""The upstream-alone client's redirect URI at the IdP (never fetched either)."""
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
_GRANTS = AccessGrant.__table__  # type: ignore[attr-defined]


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then HTTP Basic."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


# -- a scripted browser ---------------------------------------------------------------------------
class Connections:
    """One keep-alive ``http.client`` connection per origin, shared by the logins (stdlib: a few tens of
    microseconds of client CPU per request, where httpx spends milliseconds on this 2-core machine)."""

    def __init__(self) -> None:
        self.pool: dict[str, http.client.HTTPConnection] = {}

    def send(
        self, netloc: str, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in (0, 1):
            conn = self.pool.get(netloc)
            if conn is None:
                host, _, port = netloc.partition(":")
                conn = self.pool[netloc] = http.client.HTTPConnection(host, int(port or 80), timeout=60)
            try:
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()  # the server closed an idle keep-alive connection: open another, once
                self.pool.pop(netloc, None)
                if attempt:
                    raise
                continue
            if response.will_close:
                conn.close()
                self.pool.pop(netloc, None)
            return response.status, response.getheaders(), data
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self.pool.values():
            conn.close()
        self.pool.clear()


@dataclass
class Page:
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def is_redirect(self) -> bool:
        return self.status in (301, 302, 303, 307, 308)

    @property
    def location(self) -> str:
        for name, value in self.headers:
            if name.lower() == "location":
                return urljoin(self.url, value)
        raise RuntimeError(f"{self.url}: {self.status} without Location")


class _FormParser(HTMLParser):
    """The first form of a page: its action and its named inputs' values."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._open = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action, self._open = values.get("action", ""), True
        elif tag == "input" and self._open and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = False


def _default_path(path: str) -> str:
    """RFC 6265 §5.1.4."""
    if not path.startswith("/") or path.count("/") == 1:
        return "/"
    return path[: path.rfind("/")]


def _path_matches(path: str, cookie_path: str) -> bool:
    return path == cookie_path or (
        path.startswith(cookie_path) and (cookie_path.endswith("/") or path[len(cookie_path)] == "/")
    )


@dataclass
class Timing:
    netloc: str
    method: str
    path: str
    seconds: float
    request_id: str | None


class Agent:
    """One user agent for one login: a cookie jar per origin (Entente's and the IdP's, like the tests'
    scripted browser), the shared connections, and each request's client-side duration."""

    def __init__(self, connections: Connections, entente: str, id_prefix: str | None) -> None:
        self.connections = connections
        self.entente = urlsplit(entente).netloc
        self.id_prefix = id_prefix
        self.jars: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
        self.timings: list[Timing] = []

    def request(self, method: str, url: str, *, form: dict[str, str] | None = None, auth: str | None = None) -> Page:
        parts = urlsplit(url)
        path = parts.path or "/"
        target = path + (f"?{parts.query}" if parts.query else "")
        jar = self.jars[parts.netloc]
        headers: dict[str, str] = {}
        cookies = [(p, n, v) for (n, p), v in jar.items() if _path_matches(path, p)]
        if cookies:
            headers["Cookie"] = "; ".join(f"{n}={v}" for _, n, v in sorted(cookies, key=lambda c: -len(c[0])))
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if auth:
            headers["Authorization"] = auth
        request_id = None
        if self.id_prefix and parts.netloc == self.entente:
            request_id = f"{self.id_prefix}-{len(self.timings):02d}"
            headers["X-Request-ID"] = request_id
        began = time.perf_counter()
        status, response_headers, data = self.connections.send(parts.netloc, method, target, body, headers)
        self.timings.append(Timing(parts.netloc, method, path, time.perf_counter() - began, request_id))
        for name, value in response_headers:
            if name.lower() == "set-cookie":
                self._store(jar, value, path)
        return Page(url, status, response_headers, data)

    @staticmethod
    def _store(jar: dict[tuple[str, str], str], header: str, request_path: str) -> None:
        first, *attributes = header.split(";")
        name, _, value = first.strip().partition("=")
        path, gone = _default_path(request_path), False
        for attribute in attributes:
            key, _, val = attribute.strip().partition("=")
            key = key.lower()
            if key == "path" and val.startswith("/"):
                path = val
            elif key == "max-age":
                gone = gone or val.strip().lstrip("-").isdigit() and int(val) <= 0
            elif key == "expires":
                with contextlib.suppress(TypeError, ValueError):
                    gone = gone or parsedate_to_datetime(val) <= dt.datetime.now(dt.UTC)
        if gone:
            jar.pop((name, path), None)
        else:
            jar[(name, path)] = value

    def browse(self, url: str, *, stop_at: str, login: str, email: str) -> str:
        """GET ``url`` and go on as a person would (follow redirects, answer Entente's email question and
        the IdP's login and consent forms) until a redirect to ``stop_at``: that Location."""
        page = self.request("GET", url)
        for _ in range(30):
            if page.is_redirect:
                location = page.location
                if location.startswith(stop_at):
                    return location
                page = self.request("GET", location)
                continue
            parser = _FormParser()
            parser.feed(page.body.decode("utf-8", "replace"))
            fields = parser.fields
            if page.status != 200 or parser.action is None:
                raise RuntimeError(f"{page.url}: {page.status} {page.body[:500]!r}")
            if "email" in fields:
                data = {**fields, "email": email}
            elif fields.get("prompt") == "login":
                data = {"prompt": "login", "login": login, "password": "any"}
            elif fields.get("prompt") == "consent":
                data = {"prompt": "consent"}
            else:
                raise RuntimeError(f"{page.url}: unexpected form {fields}")
            page = self.request("POST", urljoin(page.url, parser.action), form=data)
        raise RuntimeError(f"no redirect to {stop_at} after 30 pages")


@dataclass
class Client:
    """An OAuth client at one provider: what the scripted relying party needs."""

    authorize: str
    token: str
    client_id: str
    secret: str
    redirect_uri: str
    scope: str = SCOPE
    extra: dict[str, str] = field(default_factory=dict)

    def login(self, agent: Agent, *, login: str, email: str) -> tuple[dict[str, Any], float]:
        """A whole login and its code exchange: the token response and the wall time in seconds."""
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **self.extra,
        }
        began = time.perf_counter()
        back = agent.browse(f"{self.authorize}?{urlencode(query)}", stop_at=self.redirect_uri, login=login, email=email)
        answer = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
        if answer.get("state") != state or "code" not in answer:
            raise RuntimeError(f"authorization response without code or with another state: {answer}")
        response = agent.request(
            "POST",
            self.token,
            form={
                "grant_type": "authorization_code",
                "code": answer["code"],
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            },
            auth=basic(self.client_id, self.secret),
        )
        elapsed = time.perf_counter() - began
        if response.status != 200:
            raise RuntimeError(f"token exchange at {self.token}: {response.status} {response.body[:300]!r}")
        return json.loads(response.body), elapsed


# -- the peers ------------------------------------------------------------------------------------
class WebhookSink:
    """The workspace's app: a Standard Webhooks endpoint answering 204 to every event (not verified)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Idp:
    """npm oidc-provider (the federation tests' idp.mjs) with rotating refresh tokens."""

    def __init__(self, scratch: Path) -> None:
        node = shutil.which("node")
        if node is None or not (IDP_DIR / "node_modules" / "oidc-provider").exists():
            raise RuntimeError(f"node and `npm ci` in {IDP_DIR} are needed (the federation tests' peer)")
        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"
        self.admin_token = secrets.token_urlsafe(24)
        self.log = scratch / "oidc-provider.log"
        env = {**os.environ, "PORT": str(port), "ADMIN_TOKEN": self.admin_token, "NODE_ENV": "development"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603 - fixed executable, our own scripts
                [node, "--import", "./bench-rotation.mjs", "idp.mjs"],
                cwd=IDP_DIR,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_http(f"{self.issuer}/.well-known/openid-configuration", self.process, "oidc-provider", log=self.log)

    def register(self, redirect_uri: str, grant_types: list[str]) -> tuple[str, str]:
        """A confidential client (RFC 7591, client_secret_basic): its id and secret."""
        response = httpx.post(
            f"{self.issuer}/reg",
            json={
                "redirect_uris": [redirect_uri],
                "grant_types": grant_types,
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"client registration at the IdP: {response.status_code} {response.text}")
        return response.json()["client_id"], response.json()["client_secret"]

    def put_account(self, sub: str, **claims: Any) -> None:
        response = httpx.put(
            f"{self.issuer}/test/accounts/{quote(sub, safe='')}",
            json=claims,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        if response.status_code != 204:
            raise RuntimeError(f"account at the IdP: {response.status_code} {response.text}")

    def client(self, client_id: str, secret: str, redirect_uri: str, **kwargs: Any) -> Client:
        return Client(f"{self.issuer}/auth", f"{self.issuer}/token", client_id, secret, redirect_uri, **kwargs)


@dataclass
class Setup:
    workspace_client: Client
    upstream_client: Client
    sub: str
    email: str
    seconds: float


def setup(env: dict[str, str], scratch: Path, root_url: str, idp: Idp, sink: WebhookSink) -> tuple[str, str, str]:
    """Through the CLI, before serving: partner, SCIM token, workspace, policy, OIDC client, IdP connection.

    Returns (SCIM token, workspace client id, its secret)."""
    entente(env, "migrate", cwd=scratch)
    entente(env, "partner", "add", PARTNER, "--name", "Login bench", "--domain", DOMAIN, cwd=scratch)
    out = entente(env, "partner", "token", PARTNER, "--expires", "2d", "--label", "login bench", cwd=scratch)
    token = out.strip().splitlines()[-1]
    whsec = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    entente(
        env, "workspace", "add", "wiki", "--connector", "webhook", "--name", "Wiki",
        "--set", f"url={sink.url}", "--set", f"secret={whsec}", cwd=scratch,
    )  # fmt: skip
    policy = scratch / "policy.yaml"
    policy.write_text(
        f"- id: {PARTNER}-wiki\n  tenant: {PARTNER}\n  description: eng uses the wiki.\n"
        "  when: { groups_any: [eng] }\n  grant: [{ workspace: wiki, role: member }]\n"
    )
    entente(env, "policy", "apply", str(policy), cwd=scratch)
    out = entente(
        env, "client", "add", "wiki-app", "--workspace", "wiki", "--redirect-uri", WORKSPACE_REDIRECT, cwd=scratch
    )
    client_secret = out.strip().splitlines()[-1]
    idp_client, idp_secret = idp.register(f"{root_url}/login/callback/{PARTNER}.oidc", ["authorization_code"])
    entente(
        {**env, "ENTENTE_IDP_CLIENT_SECRET": idp_secret},
        "idp", "add", PARTNER, "--oidc-issuer", idp.issuer, "--client-id", idp_client, cwd=scratch,
    )  # fmt: skip
    return token, "wiki-app", client_secret


def provision_person(root_url: str, token: str, sub: str, email: str, url: str) -> None:
    """One person by SCIM, in group eng; waits until the engine has granted them the workspace."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    with httpx.Client(base_url=f"{root_url}/scim/v2", headers=headers, timeout=60) as scim:
        user = scim.post(
            "/Users",
            content=json.dumps(
                {
                    "schemas": [USER_SCHEMA],
                    "userName": email,
                    "externalId": sub,
                    "displayName": "Ada Bench",
                    "name": {"givenName": "Ada", "familyName": "Bench"},
                    "emails": [{"value": email, "type": "work", "primary": True}],
                }
            ),
        )
        user.raise_for_status()
        members = [{"value": user.json()["id"]}]
        group = scim.post(
            "/Groups", content=json.dumps({"schemas": [GROUP_SCHEMA], "displayName": "eng", "members": members})
        )
        group.raise_for_status()
    db = create_db_engine(Settings(database_url=url, database_pool_size=1))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with db.connect() as c:
                if c.execute(select(func.count()).select_from(_GRANTS)).scalar_one():
                    return
            time.sleep(0.1)
    finally:
        db.dispose()
    raise RuntimeError("the engine granted nobody the workspace within 60 s")


# -- phase 1: login latency -----------------------------------------------------------------------
def read_access_log(path: Path) -> dict[str, dict[str, Any]]:
    """Entente's access lines by request id: method, path, status, duration_ms."""
    lines: dict[str, dict[str, Any]] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "entente.access" and record.get("request_id"):
            lines[record["request_id"]] = record
    return lines


def _step(timing: Timing, seen: Counter[str]) -> str:
    """A readable name for an Entente request of the login."""
    path = timing.path
    if path.startswith("/login/callback/"):
        name = "callback (+ token, userinfo at the IdP)"
    elif path == "/login":
        name = f"{timing.method} /login"
    elif path.startswith("/login/"):
        name = "GET /login/{partner}"
    else:
        name = f"{timing.method} {path}"
    seen[name] += 1
    return name if seen[name] == 1 else f"{name} #{seen[name]}"


def latency_phase(
    setup_: Setup, serve_pids: list[int], idp_pid: int, logins: int, warmup: int, entente_root: str
) -> tuple[dict[str, Any], list[list[Timing]]]:
    connections = Connections()
    totals: dict[str, list[float]] = {"entente": [], "upstream": []}
    entente_client_ms: list[float] = []
    cpu: dict[str, list[float]] = defaultdict(list)
    entente_timings: list[list[Timing]] = []
    requests: dict[str, list[int]] = defaultdict(list)
    try:
        for i in range(warmup + logins):
            counted = i >= warmup
            # Entente
            agent = Agent(connections, entente_root, f"L{i:05d}" if counted else None)
            e0, n0 = cpu_seconds(serve_pids), cpu_seconds([idp_pid])
            _, elapsed = setup_.workspace_client.login(agent, login=setup_.sub, email=setup_.email)
            e1, n1 = cpu_seconds(serve_pids), cpu_seconds([idp_pid])
            if counted:
                totals["entente"].append(elapsed * 1000)
                mine = [t for t in agent.timings if t.netloc == agent.entente]
                entente_client_ms.append(1000 * sum(t.seconds for t in mine))
                entente_timings.append(mine)
                requests["entente: to Entente"].append(len(mine))
                requests["entente: to the IdP"].append(len(agent.timings) - len(mine))
                cpu["entente: entente serve"].append((e1 - e0) * 1000)
                cpu["entente: oidc-provider"].append((n1 - n0) * 1000)
            # the upstream alone
            agent = Agent(connections, entente_root, None)
            n0 = cpu_seconds([idp_pid])
            _, elapsed = setup_.upstream_client.login(agent, login=setup_.sub, email=setup_.email)
            n1 = cpu_seconds([idp_pid])
            if counted:
                totals["upstream"].append(elapsed * 1000)
                requests["upstream: to the IdP"].append(len(agent.timings))
                cpu["upstream: oidc-provider"].append((n1 - n0) * 1000)
    finally:
        connections.close()
    entente_s, upstream_s = summary(totals["entente"], p50="median"), summary(totals["upstream"], p50="median")
    return {
        "logins": logins,
        "warmup": warmup,
        "load_after": os.getloadavg(),
        "entente_total_ms": entente_s,
        "upstream_total_ms": upstream_s,
        "entente_added_ms": {
            "difference_of_medians": entente_s["p50"] - upstream_s["p50"],
            "difference_of_p90": entente_s["p90"] - upstream_s["p90"],
            "difference_of_p99": entente_s["p99"] - upstream_s["p99"],
            "median_of_paired_differences": statistics.median(
                e - u for e, u in zip(totals["entente"], totals["upstream"], strict=True)
            ),
        },
        "entente_requests_client_sum_ms": summary(entente_client_ms, p50="median"),
        "requests_per_login": {k: statistics.median(v) for k, v in requests.items()},
        "cpu_ms_per_login": {k: summary(v, p50="median") for k, v in cpu.items()},
    }, entente_timings


def server_side(timings: list[list[Timing]], access: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Entente's own durations (its access log) per login and per step of the login."""
    per_login: list[float] = []
    per_login_no_callback: list[float] = []
    per_step: dict[str, list[float]] = defaultdict(list)
    client_step: dict[str, list[float]] = defaultdict(list)
    missing = 0
    for login in timings:
        seen: Counter[str] = Counter()
        total = without = 0.0
        for timing in login:
            step = _step(timing, seen)
            client_step[step].append(timing.seconds * 1000)
            record = access.get(timing.request_id or "")
            if record is None:
                missing += 1
                continue
            ms = float(record["duration_ms"])
            per_step[step].append(ms)
            total += ms
            if not step.startswith("callback"):
                without += ms
        per_login.append(total)
        per_login_no_callback.append(without)
    return {
        "server_ms_per_login": summary(per_login, p50="median"),
        "server_ms_per_login_without_callback": summary(per_login_no_callback, p50="median"),
        "server_ms_per_step": {k: summary(v, p50="median") for k, v in per_step.items()},
        "client_ms_per_step": {k: summary(v, p50="median") for k, v in client_step.items()},
        "requests_missing_from_access_log": missing,
    }


# -- phase 2: refresh grants ----------------------------------------------------------------------
async def _chains(base: str, headers: dict[str, str], path: str, tokens: list[str], seconds: float) -> dict[str, Any]:
    url = urlsplit(base)
    latencies: list[float] = []
    errors: list[str] = []
    done = 0

    async def chain(index: int) -> None:
        nonlocal done
        connection = _Connection(url.hostname or "127.0.0.1", url.port or 80, headers)
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                body = urlencode({"grant_type": "refresh_token", "refresh_token": tokens[index]}).encode()
                sent = time.perf_counter()
                try:
                    status, payload = await connection.request("POST", path, body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                if status != 200:
                    errors.append(f"{status}: {payload[:200]!r}")
                    return  # the chain is broken: its latest token may or may not have rotated
                latencies.append(time.perf_counter() - sent)
                tokens[index] = json.loads(payload)["refresh_token"]
                done += 1
        finally:
            await connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(chain(i) for i in range(len(tokens))))
    return {"grants": done, "elapsed": time.perf_counter() - began, "latencies": latencies, "errors": errors}


def run_chains(base: str, headers: dict[str, str], path: str, tokens: list[str], seconds: float) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_chains(base, headers, path, tokens, seconds))
    return uvloop.run(_chains(base, headers, path, tokens, seconds))


def refresh_phase(
    name: str, client: Client, tokens: list[str], pids: list[int], seconds: float, profiler: Profiler | None = None
) -> dict[str, Any]:
    parts = urlsplit(client.token)
    base, path = f"{parts.scheme}://{parts.netloc}", parts.path
    headers = {
        "Authorization": basic(client.client_id, client.secret),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    first = list(tokens)
    warm = run_chains(base, headers, path, tokens, 1.0)
    if warm["errors"]:
        raise RuntimeError(f"{name}: refresh warm-up failed: {warm['errors'][:3]}")
    if any(a == b for a, b in zip(first, tokens, strict=True)):
        raise RuntimeError(f"{name}: a refresh grant returned the same refresh token (no rotation)")
    load_before = os.getloadavg()
    cpu = cpu_seconds(pids)
    outcome = run_chains(base, headers, path, tokens, seconds)
    cpu = cpu_seconds(pids) - cpu
    result: dict[str, Any] = {
        "server": name,
        "chains": len(tokens),
        "seconds": outcome["elapsed"],
        "grants": outcome["grants"],
        "grants_per_s": outcome["grants"] / outcome["elapsed"],
        "latency_ms": summary([s * 1000 for s in outcome["latencies"]], p50="median"),
        "cpu_ms_per_grant": 1000 * cpu / outcome["grants"] if outcome["grants"] else None,
        "errors": len(outcome["errors"]),
        "error_examples": outcome["errors"][:5],
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    if profiler is not None:
        result["py_spy"] = profiler.finish(top=30)
    return result


def py_spy(path: Path, pid: int) -> Profiler:
    """A profile of entente serve and its workers (``--subprocesses``) into ``path``, until ``finish``."""
    return Profiler(path, pid, rate=200, subprocesses=True)


def refresh_tokens(client: Client, count: int, sub: str, email: str, root: str) -> list[str]:
    """``count`` logins with ``client``: their refresh tokens, one per chain."""
    connections = Connections()
    try:
        tokens = []
        for _ in range(count):
            body, _ = client.login(Agent(connections, root, None), login=sub, email=email)
            if "refresh_token" not in body:
                raise RuntimeError(f"no refresh token from {client.token}: {sorted(body)}")
            tokens.append(body["refresh_token"])
        return tokens
    finally:
        connections.close()


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--logins", type=int, default=200, help="measured logins of each kind (interleaved)")
    parser.add_argument("--warmup", type=int, default=10, help="logins of each kind before measuring")
    parser.add_argument("--chains", type=int, default=16, help="concurrent refresh-token chains")
    parser.add_argument("--refresh-seconds", type=float, default=30.0, help="length of each refresh run")
    parser.add_argument("--no-peer-refresh", action="store_true", help="skip oidc-provider's refresh run")
    parser.add_argument("--workers", type=int, default=1, help="entente serve --workers")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="profile entente serve in both phases (sampling slows it: not for the figures)",
    )
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (servers, database) when terminated

    scratch = Path(tempfile.mkdtemp(prefix="entente-login-"))
    url, pg_name = new_database(args.database, scratch, "entente_login")
    port = free_port()
    root_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTENTE_")}
    env.update(
        ENTENTE_DATABASE_URL=url,
        ENTENTE_SECRET_KEY=Fernet.generate_key().decode(),
        ENTENTE_PUBLIC_BASE_URL=root_url,
        ENTENTE_LOG_FORMAT="json",
        ENTENTE_LOG_LEVEL="INFO",
    )
    report: dict[str, Any] = {
        "database": args.database,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "python": platform.python_version()},
        "config": {
            "logins": args.logins,
            "warmup": args.warmup,
            "chains": args.chains,
            "refresh_seconds": args.refresh_seconds,
            "serve_workers": args.workers,
            "py_spy": args.py_spy is not None,
            "idp": "npm oidc-provider " + _idp_version(),
            "scope": SCOPE,
        },
    }
    workers = f"-w{args.workers}" if args.workers != 1 else ""
    out = ROOT / "bench" / "results" / f"login-{args.database}{workers}{args.tag}.json"
    serve_log = scratch / "serve.log"
    sink = WebhookSink()
    idp: Idp | None = None
    serve: subprocess.Popen[bytes] | None = None
    try:
        idp = Idp(scratch)
        began = time.perf_counter()
        token, client_id, client_secret = setup(env, scratch, root_url, idp, sink)
        with serve_log.open("wb") as log:
            serve = subprocess.Popen(  # noqa: S603
                [
                    str(BIN / "entente"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                ],
                env=env,
                cwd=scratch,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_http(f"{root_url}/healthz", serve, "entente serve", log=serve_log)
        sub, email = f"ada-{uuid.uuid4().hex[:8]}", f"ada@{DOMAIN}"
        idp.put_account(sub, email=email, email_verified=True, name="Ada Bench", preferred_username=email)
        provision_person(root_url, token, sub, email, url)
        up_id, up_secret = idp.register(UPSTREAM_REDIRECT, ["authorization_code"])
        the_setup = Setup(
            workspace_client=Client(
                f"{root_url}/oidc/authorize", f"{root_url}/oidc/token", client_id, client_secret, WORKSPACE_REDIRECT
            ),
            upstream_client=idp.client(up_id, up_secret, UPSTREAM_REDIRECT),
            sub=sub,
            email=email,
            seconds=time.perf_counter() - began,
        )
        report["setup_s"] = the_setup.seconds
        serve_pids = process_tree(serve.pid)
        report["config"]["serve_pids"] = len(serve_pids)

        print(f"login latency: {args.logins} logins each, interleaved ...", file=sys.stderr)
        profiler = py_spy(args.py_spy / f"login-{args.database}-latency.txt", serve.pid) if args.py_spy else None
        latency, timings = latency_phase(the_setup, serve_pids, idp.process.pid, args.logins, args.warmup, root_url)
        report["latency"] = latency
        if profiler is not None:
            report["latency"]["py_spy"] = profiler.finish(top=30)
        time.sleep(0.5)  # the access log is written by the server; let the last lines land
        report["latency"]["entente_side"] = server_side(timings, read_access_log(serve_log))
        added = latency["entente_added_ms"]["difference_of_medians"]
        print(f"  Entente adds {added:.1f} ms (difference of medians)", file=sys.stderr)

        print(f"refresh grants: {args.chains} chains, {args.refresh_seconds:.0f} s ...", file=sys.stderr)
        tokens = refresh_tokens(the_setup.workspace_client, args.chains, sub, email, root_url)
        profiler = py_spy(args.py_spy / f"login-{args.database}-refresh.txt", serve.pid) if args.py_spy else None
        report["refresh_entente"] = refresh_phase(
            "entente", the_setup.workspace_client, tokens, serve_pids, args.refresh_seconds, profiler
        )
        print(f"  Entente: {report['refresh_entente']['grants_per_s']:.0f} grants/s", file=sys.stderr)
        if not args.no_peer_refresh:
            # Registered only now: the IdP keeps clients in its in-memory store, an LRU of 1,000 entries
            # that the login phase would have cycled through. Refresh tokens need offline_access, which
            # oidc-provider grants only with prompt=consent.
            rt_id, rt_secret = idp.register(UPSTREAM_REDIRECT, ["authorization_code", "refresh_token"])
            refresh_client = idp.client(
                rt_id, rt_secret, UPSTREAM_REDIRECT, scope=f"{SCOPE} offline_access", extra={"prompt": "consent"}
            )
            tokens = refresh_tokens(refresh_client, args.chains, sub, email, root_url)
            report["refresh_oidc_provider"] = refresh_phase(
                "oidc-provider", refresh_client, tokens, [idp.process.pid], args.refresh_seconds
            )
            print(f"  oidc-provider: {report['refresh_oidc_provider']['grants_per_s']:.0f} grants/s", file=sys.stderr)
        report["machine"]["load_after"] = os.getloadavg()
    finally:
        stop(serve)
        if idp is not None:
            stop(idp.process)
        sink.close()
        drop_database(pg_name)
    if "Traceback (most recent call last)" in serve_log.read_text(errors="replace"):
        report["serve_log_has_traceback"] = True
        print(f"warning: entente serve logged a traceback, see {serve_log}", file=sys.stderr)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(render(report))
    print(f"\n(results: {out.relative_to(ROOT)}; logs: {scratch})")


def _idp_version() -> str:
    try:
        return str(json.loads((IDP_DIR / "node_modules" / "oidc-provider" / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def render(report: dict[str, Any]) -> str:
    lat = report["latency"]
    e, u = lat["entente_total_ms"], lat["upstream_total_ms"]
    side = lat["entente_side"]
    server, callback = (
        side["server_ms_per_login"],
        side["server_ms_per_step"].get("callback (+ token, userinfo at the IdP)", {"p50": float("nan")}),
    )
    rest = side["server_ms_per_login_without_callback"]
    cpu = lat["cpu_ms_per_login"]
    added = lat["entente_added_ms"]
    cfg = report["config"]
    load = report["machine"]

    def triple(s: dict[str, float]) -> str:
        return f"{s['p50']:.1f} / {s['p90']:.1f} / {s['p99']:.1f}"

    lines = [
        f"### {report['database']}: federated login through Entente, {cfg['logins']} logins, "
        f"{cfg['chains']} refresh chains (load average {load['load_before'][0]:.1f} -> "
        f"{load.get('load_after', [float('nan')])[0]:.1f})",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| login through Entente (workspace -> Entente -> IdP -> Entente -> token), p50 / p90 / p99 ms | "
        f"{triple(e)} | |",
        f"| the same login at the IdP alone (its own client, its token exchange), p50 / p90 / p99 ms | {triple(u)} | |",
        f"| **Entente-added latency** (difference of medians; p90, p99 differences) | "
        f"**{added['difference_of_medians']:.1f} ms** ({added['difference_of_p90']:.1f}, "
        f"{added['difference_of_p99']:.1f}) | p50 <= 15 ms |",
        f"| Entente's requests per login (its access log, summed), p50 / p90 / p99 ms | {triple(server)} | |",
        f"| - of which the callback (incl. its token and userinfo calls to the IdP), p50 ms | "
        f"{callback['p50']:.1f} | |",
        f"| - the other {lat['requests_per_login'].get('entente: to Entente', 0) - 1:.0f} requests, p50 ms | "
        f"{rest['p50']:.1f} | |",
        f"| server CPU per login (mean): entente serve / oidc-provider (through Entente) / oidc-provider (alone), ms | "
        f"{cpu['entente: entente serve']['mean']:.1f} / {cpu['entente: oidc-provider']['mean']:.1f} / "
        f"{cpu['upstream: oidc-provider']['mean']:.1f} | |",
    ]
    for key, name in (("refresh_entente", "Entente"), ("refresh_oidc_provider", "oidc-provider")):
        if key not in report:
            continue
        r = report[key]
        cpu_ms = "n/a" if r["cpu_ms_per_grant"] is None else f"{r['cpu_ms_per_grant']:.2f}"
        lines.append(
            f"| refresh grants/s, {name} ({r['chains']} chains, rotating), latency p50 / p99 ms, CPU ms/grant, "
            f"errors | **{r['grants_per_s']:,.0f}/s**, {r['latency_ms'].get('p50', float('nan')):.1f} / "
            f"{r['latency_ms'].get('p99', float('nan')):.1f}, {cpu_ms}, {r['errors']} | "
            + ("≥ 500/s |" if name == "Entente" else "|")
        )
    lines += [
        "",
        "| Entente request of the login | server p50 / p99 ms (access log) | client p50 ms |",
        "|---|---|---|",
    ]
    for step, s in side["server_ms_per_step"].items():
        client = side["client_ms_per_step"].get(step, {"p50": float("nan")})
        lines.append(f"| {step} | {s['p50']:.1f} / {s['p99']:.1f} | {client['p50']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
