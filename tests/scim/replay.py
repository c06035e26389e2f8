"""The replay corpus (standards §2.7): recorded IdP and RFC requests in tests/data/scim_replay/*.json.

Each file is one request: ``idp``, ``profile``, ``source`` (where the payload was copied from),
``method``, ``path`` (raw, exactly as the IdP encodes it) or ``path`` + ``query`` (a dict the client
encodes), ``headers``, ``body``, and ``expect`` (``status`` list, ``state`` in words). Placeholders
``{uid}``, ``{uid2}``, ``{gid}``, ``{domain}``, ``{domain2}`` are ids and verified domains known only at
test time; they are substituted inside every string, keys included.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.audit.log import Actor
from broker.tenants.models import DomainPolicy
from broker.tenants.service import add_partner, issue_scim_token
from tests.conftest import SCIM_BASE, PartnerHandle

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
    """A partner for a module-scoped fixture (``make_partner`` is per test); same shape as conftest's."""
    slug = f"p{uuid.uuid4().hex[:10]}"
    domains = domains or [f"{slug}.test"]
    with Session(engine, expire_on_commit=False) as session:
        partner = add_partner(
            session=session,
            slug=slug,
            name=f"Partner {slug}",
            domains=domains,
            actor=Actor("cli", "tests"),
            domain_policy=domain_policy,
        )
        issued = issue_scim_token(
            session=session, slug=slug, expires_in=dt.timedelta(hours=1), actor=Actor("cli", "tests")
        )
    client = TestClient(
        app,
        base_url=SCIM_BASE,
        headers={"Authorization": f"Bearer {issued.secret_text}"},
        raise_server_exceptions=False,
    )
    try:
        yield PartnerHandle(id=partner.id, slug=slug, domain=domains[0], token=issued.secret_text, client=client)
    finally:
        client.close()
