"""A partner's SAML 2.0 IdP for Entente's federation tests: pysaml2 in the IdP role, signing with xmlsec1.

Started by ``tests/peers/saml_idp_process.py`` on a free 127.0.0.1 port. Test-only by design: in-memory
users and SPs, a login form that takes any registered login name without a password.

Environment:
    PORT         the port to listen on (127.0.0.1 only)
    ADMIN_TOKEN  bearer of the two test endpoints below
    KEY_FILE     the IdP's signing key (PEM)
    CERT_FILE    its certificate (PEM), published in the metadata

Endpoints:
    GET  /metadata             the IdP's metadata (its entityID is this URL)
    GET  /sso/redirect         SAML 2.0 HTTP-Redirect binding (saml-bindings §3.4): the login form
    POST /sso/login            the login form's answer: an auto-posting form to the SP's ACS (§3.5)
    PUT  /test/sp              (test only) an SP's metadata XML: the SPs this IdP answers
    PUT  /test/users/{login}   (test only) JSON ``{"name_id", "name_id_format", "attributes"}``
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

PORT = int(os.environ["PORT"])
ADMIN_TOKEN = os.environ["ADMIN_TOKEN"]
BASE = f"http://127.0.0.1:{PORT}"
AUTHN_CLASS = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def _server() -> Server:
    config = IdPConfig()
    config.load(
        {
            "entityid": f"{BASE}/metadata",
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(f"{BASE}/sso/redirect", BINDING_HTTP_REDIRECT)]},
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    "policy": {"default": {"lifetime": {"minutes": 5}, "name_form": NAME_FORMAT_URI}},
                }
            },
            "key_file": os.environ["KEY_FILE"],
            "cert_file": os.environ["CERT_FILE"],
            "xmlsec_binary": shutil.which("xmlsec1"),
            "metadata": {},
        }
    )
    return Server(config=config)


IDP = _server()
METADATA = str(entity_descriptor(IDP.config)).encode()
USERS: dict[str, dict[str, Any]] = {}
LOCK = threading.Lock()


def _login_form(saml_request: str, relay_state: str, error: str = "") -> bytes:
    alert = f'<p role="alert">{escape(error)}</p>' if error else ""
    return (
        "<!DOCTYPE html><html><body><h1>Test IdP</h1>" + alert + '<form method="post" action="/sso/login">'
        f'<input type="hidden" name="SAMLRequest" value="{escape(saml_request)}">'
        f'<input type="hidden" name="RelayState" value="{escape(relay_state)}">'
        '<input name="login" value=""><button type="submit">Sign in</button></form></body></html>'
    ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        sys.stderr.write(f"{self.command} {self.path}\n")

    def _send(self, status: int, body: bytes = b"", content_type: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        parts = urlsplit(self.path)
        if parts.path == "/metadata":
            self._send(200, METADATA, "application/samlmetadata+xml")
            return
        if parts.path == "/sso/redirect":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            try:
                IDP.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT)
            except Exception as exc:  # noqa: BLE001 - shown to the test as a page
                self._send(400, f"bad AuthnRequest: {exc!r}".encode())
                return
            self._send(200, _login_form(query["SAMLRequest"], query.get("RelayState", "")))
            return
        self._send(404)

    def do_PUT(self) -> None:  # noqa: N802
        if self.headers.get("Authorization") != f"Bearer {ADMIN_TOKEN}":
            self._send(401)
            return
        path = urlsplit(self.path).path
        body = self._body()
        if path == "/test/sp":
            with LOCK:
                IDP.metadata.load("inline", body.decode())
            self._send(204)
            return
        if path.startswith("/test/users/"):
            with LOCK:
                USERS[unquote(path.removeprefix("/test/users/"))] = json.loads(body)
            self._send(204)
            return
        self._send(404)

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/sso/login":
            self._send(404)
            return
        form = {k: v[0] for k, v in parse_qs(self._body().decode(), keep_blank_values=True).items()}
        user = USERS.get(form.get("login", ""))
        if user is None:
            self._send(200, _login_form(form["SAMLRequest"], form["RelayState"], "unknown login"))
            return
        request = IDP.parse_authn_request(form["SAMLRequest"], BINDING_HTTP_REDIRECT)
        with LOCK:
            args = IDP.response_args(request.message, [BINDING_HTTP_POST])
            response = IDP.create_authn_response(
                identity=user.get("attributes", {}),
                in_response_to=args["in_response_to"],
                destination=args["destination"],
                sp_entity_id=args["sp_entity_id"],
                name_id=NameID(format=user.get("name_id_format", NAMEID_FORMAT_PERSISTENT), text=user["name_id"]),
                authn={"class_ref": AUTHN_CLASS},
                sign_response=True,
                sign_assertion=True,
                sign_alg=SIG_RSA_SHA256,
                digest_alg=DIGEST_SHA256,
            )
        http_args = IDP.apply_binding(
            BINDING_HTTP_POST, str(response), args["destination"], form["RelayState"], response=True
        )
        self._send(200, http_args["data"].encode())


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
