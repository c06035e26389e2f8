"""A scripted browser for federated logins: Entente in process, the partner's IdP over real HTTP.

Entente runs as the session's app behind a ``TestClient`` (``http://testserver``, the public base URL
of the test settings); the IdP is the real oidc-provider on 127.0.0.1. Like a browser, it keeps one
cookie jar per site and follows redirects across both; unlike one, it can stop before any hop so a
test can tamper with what would be sent (the callback URL, the authorization request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import cast
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

__all__ = ["Browser", "replace_query"]


@dataclass
class _Form:
    action: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    """The first form of a page: its action and its named inputs' values."""

    def __init__(self) -> None:
        super().__init__()
        self.form: _Form | None = None
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.form is None:
            self.form = _Form(action=values.get("action", ""))
        elif tag == "input" and self.form is not None and not self._done and values.get("name"):
            self.form.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._done = True


def replace_query(url: str, **changes: str | None) -> str:
    """``url`` with query parameters replaced (``None`` removes one)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


class Browser:
    """Two cookie jars (Entente's and the IdP's) and redirect-following across them."""

    def __init__(self, app: FastAPI, *, base_url: str = "http://testserver") -> None:
        self.base_url = base_url
        self.entente = TestClient(app, base_url=base_url, follow_redirects=False)
        self.idp = httpx.Client(follow_redirects=False, timeout=30.0)

    def close(self) -> None:
        self.entente.close()
        self.idp.close()

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        """Entente's URLs go to the app (a ``TestClient``: httpx2's twin response type), others to the network."""
        if url.startswith(self.base_url) or url.startswith("/"):
            return cast(httpx.Response, self.entente.request(method, url, **kwargs))  # type: ignore[arg-type]
        return self.idp.request(method, url, **kwargs)  # type: ignore[arg-type]

    def get(self, url: str) -> httpx.Response:
        return self.request("GET", url)

    @staticmethod
    def location(response: httpx.Response) -> str:
        return urljoin(str(response.url), response.headers["location"])

    def follow(self, response: httpx.Response) -> httpx.Response:
        """Follow redirects wherever they lead, until a page."""
        for _ in range(20):
            if not response.is_redirect:
                return response
            response = self.get(self.location(response))
        raise AssertionError("redirect loop")

    def submit(self, page: httpx.Response, **values: str) -> httpx.Response:
        """POST the page's first form: its fields as they are, ``values`` filled in (as a person would)."""
        parser = _FormParser()
        parser.feed(page.text)
        assert parser.form is not None, (page.status_code, page.text[:2000])
        return self.request("POST", urljoin(str(page.url), parser.form.action), data={**parser.form.fields, **values})

    def to_idp(self, start: str) -> str:
        """GET an Entente login URL and return the authorization request URL it redirects to (not yet sent)."""
        response = self.get(start)
        for _ in range(5):
            assert response.is_redirect, (response.status_code, response.text)
            location = self.location(response)
            if not location.startswith(self.base_url):
                return location
            response = self.get(location)
        raise AssertionError("Entente never redirected to the IdP")

    def sign_in_at_idp(self, authorization_url: str, login: str) -> str:
        """Send the authorization request, log in as ``login`` and consent in the devInteractions forms;
        the callback URL the IdP redirects to (not yet sent to Entente)."""
        response = self.get(authorization_url)
        for _ in range(12):
            if response.is_redirect:
                location = self.location(response)
                if location.startswith(self.base_url):
                    return location
                response = self.get(location)
                continue
            parser = _FormParser()
            parser.feed(response.text)
            form = parser.form
            assert form is not None, (response.status_code, response.text[:2000])
            prompt = form.fields.get("prompt")
            if prompt == "login":
                data = {"prompt": "login", "login": login, "password": "any"}
            elif prompt == "consent":
                data = {"prompt": "consent"}
            else:
                raise AssertionError(f"unexpected IdP page: {response.text[:2000]}")
            response = self.request("POST", urljoin(str(response.url), form.action), data=data)
        raise AssertionError("the IdP never redirected back to Entente")

    def login(self, start: str, login: str) -> httpx.Response:
        """The whole flow: Entente's start URL -> IdP -> Entente's callback; returns the callback's response."""
        callback = self.sign_in_at_idp(self.to_idp(start), login)
        return self.get(callback)
