"""The framework-free request and response authlib's server works on (what its Flask/Django integrations wrap).

``EntenteRequest`` is built by the HTTP edge from plain values (method, issuer-based URI, headers,
query and form pairs, the caller's login session); ``OAuthResponse`` is what authlib's
``handle_response`` returns, turned into a Starlette response only by the edge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request

from broker.sessions.models import LoginSession

__all__ = ["EntenteRequest", "LoginNeeded", "OAuthResponse"]


@dataclass
class OAuthResponse:
    """A response as authlib produces it: status, a JSON object or text, and headers (in order)."""

    status: int
    body: dict[str, Any] | str
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        """The ``Location`` header (authlib's RFC 9207 extension reads and rewrites it)."""
        return next((value for name, value in self.headers if name.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(n, v) for n, v in self.headers if n.lower() != "location"] + [("Location", value)]


@dataclass
class LoginNeeded(OAuthResponse):
    """The redirect to the login page, with what the edge needs to ask Entente's own question in place."""

    next_path: str = ""
    """Where the login page sends the browser back: the authorization request, less ``prompt`` and ``max_age``."""
    first_login: bool = False
    """No login session at all (not ``prompt=login`` or an exceeded ``max_age``), and no usable ``login_hint``."""


class _Parameters(OAuth2Payload):  # type: ignore[misc]
    """Request parameters: the first value of each name (``data``) and all of them (``datalist``)."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in pairs:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class EntenteRequest(OAuth2Request):  # type: ignore[misc]
    """An OAuth request from plain values: query and form pairs, headers, and the caller's login session.

    ``uri`` is the request URL under the configured public base URL (authlib refuses a non-https
    one unless it is a loopback address). Parameters are read from the query for GET and from the
    form body for POST (RFC 6749 §3.1, §3.2).
    """

    def __init__(
        self,
        *,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        query: Sequence[tuple[str, str]] = (),
        form: Sequence[tuple[str, str]] = (),
        login: LoginSession | None = None,
    ) -> None:
        super().__init__(method, uri, None, headers)
        self._query = _Parameters(query)
        self._form = _Parameters(form)
        self.payload = self._form if method == "POST" else self._query
        self.login = login
        """The live LoginSession the request's cookie names, if any."""

    @property
    def args(self) -> dict[str, str]:
        return self._query.data

    @property
    def form(self) -> dict[str, str]:
        return self._form.data

    def without(self, *names: str) -> list[tuple[str, str]]:
        """The request's parameters minus these names (to send the browser back here after a login)."""
        return [
            (name, value) for name, values in self.payload.datalist.items() if name not in names for value in values
        ]
