"""The replay corpus (standards §2.7): recorded IdP and RFC requests in tests/data/scim_replay/*.json.

Each file is one request: ``idp``, ``profile``, ``source`` (where the payload was copied from),
``method``, ``path`` (raw, exactly as the IdP encodes it) or ``path`` + ``query`` (a dict the client
encodes), ``headers``, ``body``, and ``expect`` (``status`` list, ``state`` in words). Placeholders
``{uid}``, ``{uid2}``, ``{gid}``, ``{domain}``, ``{domain2}`` are ids and verified domains known only at
test time; they are substituted inside every string, keys included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from broker.tenants.models import DomainPolicy
from tests.conftest import PartnerHandle, new_partner

__all__ = ["CORPUS", "load", "open_partner", "send", "unique_domain"]

CORPUS = Path(__file__).resolve().parent.parent / "data" / "scim_replay"


def unique_domain(label: str) -> str:
    """A domain no other partner holds (verified domains are unique across partners)."""
    return f"{label}-{uuid.uuid4().hex[:10]}.test"


def _substitute(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in subs.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, list):
        return [_substitute(v, subs) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, subs): _substitute(v, subs) for k, v in value.items()}
    return value


def load(name: str, **subs: str) -> dict[str, Any]:
    """One corpus entry with its placeholders filled; a placeholder left unfilled fails the test."""
    entry = json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))
    filled = _substitute(entry, subs)
    leftover = [p for p in ("{uid}", "{uid2}", "{gid}", "{domain}", "{domain2}") if p in json.dumps(filled)]
    assert not leftover, f"{name}: placeholders {leftover} not given"
    return filled  # type: ignore[no-any-return]


def send(client: TestClient, name: str, **subs: str) -> Any:
    """Replay one entry and check its status is one the entry expects; the TestClient's response."""
    entry = load(name, **subs)
    kwargs: dict[str, Any] = {"headers": entry.get("headers") or {}}
    if entry.get("query"):
        kwargs["params"] = entry["query"]
    if entry.get("body") is not None:
        kwargs["content"] = json.dumps(entry["body"]).encode()
        kwargs["headers"] = {"Content-Type": "application/scim+json", **kwargs["headers"]}
    response = client.request(entry["method"], entry["path"], **kwargs)
    assert response.status_code in entry["expect"]["status"], (name, response.status_code, response.text)
    return response


def open_partner(
    app: FastAPI,
    engine: Engine,
    *,
    domains: list[str] | None = None,
    domain_policy: DomainPolicy = DomainPolicy.ENFORCE,
) -> Iterator[PartnerHandle]:
    """A partner for a module-scoped fixture (``make_partner`` is per test)."""
    handle = new_partner(app, engine, domain_policy=domain_policy, domains=domains)
    try:
        yield handle
    finally:
        handle.client.close()


class ReplaySession:
    """A vendor-provisioned partner replaying corpus entries, with the reads every sequence checks."""

    def __init__(self, partner: PartnerHandle, **subs: str) -> None:
        self.partner = partner
        self.client = partner.client
        self.subs = subs

    def send(self, name: str, **ids: str) -> Any:
        return send(self.client, name, **self.subs, **ids)

    def user(self, user_id: str) -> dict[str, Any]:
        response = self.client.get(f"/Users/{user_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def group(self, group_id: str) -> dict[str, Any]:
        response = self.client.get(f"/Groups/{group_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def member_ids(self, group_id: str) -> set[str]:
        return {m["value"] for m in self.group(group_id).get("members", [])}
