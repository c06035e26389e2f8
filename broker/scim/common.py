"""Helpers every SCIM resource service shares: ETag preconditions, domain binding, change summaries."""

from __future__ import annotations

import contextlib
from typing import Any

from broker.errors import DomainNotVerified, InvalidSyntax, Mutability, PreconditionFailed
from broker.scim.auth import ScimCaller
from broker.scim.normalize import ENTERPRISE
from broker.tenants.models import DomainPolicy

__all__ = [
    "changed_attributes",
    "check_body_id",
    "check_domains",
    "check_if_match",
    "etag_matches",
    "require_object",
]


def require_object(payload: Any) -> dict[str, Any]:
    """A request body that must be a JSON object, else 400 invalidSyntax."""
    if not isinstance(payload, dict):
        raise InvalidSyntax("the request body must be a JSON object")
    return payload


def etag_matches(header: str, version: int) -> bool:
    """Whether an If-Match / If-None-Match header names this version (weak comparison, RFC 9110 §8.8.3.2)."""
    current = str(version)
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == current:
            return True
    return False


def check_if_match(if_match: str | None, version: int) -> None:
    """RFC 7644 §3.14: a stale If-Match refuses the write with 412 and changes nothing."""
    if if_match is not None and not etag_matches(if_match, version):
        raise PreconditionFailed(f'If-Match {if_match} does not match the current version W/"{version}"')


def _addresses(doc: dict[str, Any] | None) -> set[str]:
    if not doc:
        return set()
    found = set()
    user_name = doc.get("userName")
    if isinstance(user_name, str) and "@" in user_name:
        found.add(("userName", user_name))
    for email in doc.get("emails") or []:
        if isinstance(email, dict) and isinstance(email.get("value"), str):
            found.add(("emails", email["value"]))
    return found  # type: ignore[return-value]


def check_domains(caller: ScimCaller, before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """Refuse (or, for warn-only partners, report) addresses outside the partner's verified domains.

    Only addresses this write introduces are checked, so a leaver's ``active=false`` is never
    refused because a domain was withdrawn after the person joined.
    """
    warnings: list[str] = []
    for attribute, address in sorted(_addresses(after) - _addresses(before)):  # type: ignore[misc]
        domain = address.rpartition("@")[2].strip().lower()
        with contextlib.suppress(UnicodeError):  # not IDNA-encodable: compared as given, and refused
            domain = domain.encode("idna").decode("ascii")
        if domain in caller.domains:
            continue
        verified = ", ".join(sorted(caller.domains)) or "none"
        message = (
            f"{attribute} '{address}' is outside the verified domains of partner '{caller.partner_slug}' ({verified})"
        )
        if caller.domain_policy == DomainPolicy.WARN:
            warnings.append(message)
        else:
            raise DomainNotVerified(message)
    return warnings


def changed_attributes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names of the attributes that differ; extension attributes as ``<urn>:<name>``."""
    changed: set[str] = set()
    for key in (before.keys() | after.keys()) - {"schemas"}:
        if key == ENTERPRISE:
            b, a = before.get(key) or {}, after.get(key) or {}
            changed.update(f"{ENTERPRISE}:{k}" for k in b.keys() | a.keys() if b.get(k) != a.get(k))
        elif before.get(key) != after.get(key):
            changed.add(key)
    return sorted(changed)


def check_body_id(body: dict[str, Any], resource_id: str) -> None:
    """A PUT body may repeat the resource's id (Okta does) but never name another: id is readOnly."""
    sent = next((v for k, v in body.items() if k.lower() == "id"), None)
    if sent is not None and sent != resource_id:
        raise Mutability(f"id is readOnly: the body says '{sent}', the resource is '{resource_id}'")
