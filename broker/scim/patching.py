"""RFC 7644 §3.5.2 PATCH of a stored user document.

scim2-models applies every PATCH: it parses paths and filters, checks mutability and types, and
revalidates the whole resource. That costs about a millisecond, most of a PATCH's own work, and
IdPs mostly send the one shape where nothing can go wrong: ``add`` or ``replace`` of a singular
string (or boolean) attribute by its plain name, e.g. ``{"op": "Replace", "path": "title",
"value": "CFO"}``. ``simple_patch`` applies exactly that shape to the document itself, producing
the document scim2-models would have produced, key order included (tests/scim/test_patching.py
holds the two side by side); anything else, down to an unexpected key, goes to scim2-models.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from scim2_models import Context, EnterpriseUser, Name, PatchOp, SCIMException

from broker.errors import Mutability
from broker.scim.normalize import CORE_USER, ENTERPRISE
from broker.scim.resources import POLICY, UserModel, as_broker_error, user_document

__all__ = ["full_patch", "patch_user_document", "simple_patch"]

_PATCH_SCHEMA = str(PatchOp.__schema__)
_OPERATION_KEYS = {"op", "path", "value"}
_SET = ("add", "replace")  # on a singular attribute both assign the value (RFC 7644 §3.5.2.1, §3.5.2.3)


def _aliases(model: Any) -> list[str]:
    return [field.serialization_alias or name for name, field in model.model_fields.items()]


_TOP_ORDER = _aliases(UserModel)
_ORDER: dict[str | None, list[str]] = {
    None: _TOP_ORDER,
    "name": _aliases(Name),
    ENTERPRISE: _aliases(EnterpriseUser),
}
"""Where scim2-models' dump puts each key, so a simple patch stores the very same JSON."""

_STRINGS_AT: dict[str | None, tuple[str, ...]] = {
    None: (
        "userName",
        "externalId",
        "displayName",
        "nickName",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
    ),
    "name": ("formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"),
    ENTERPRISE: ("employeeNumber", "costCenter", "organization", "division", "department"),
}
_PREFIX = {None: "", "name": "name.", ENTERPRISE: ENTERPRISE + ":"}
_TARGETS: dict[str, tuple[str | None, str, type]] = {
    f"{_PREFIX[container]}{key}".lower(): (container, key, str)
    for container, keys in _STRINGS_AT.items()
    for key in keys
}
_TARGETS["active"] = (None, "active", bool)
"""Lower-cased path -> (containing attribute, key, the one JSON type its value may have)."""


def _ordered(doc: dict[str, Any], order: list[str]) -> dict[str, Any]:
    ordered = {key: doc[key] for key in order if key in doc}
    ordered.update((key, value) for key, value in doc.items() if key not in ordered)
    return ordered


def simple_patch(doc: dict[str, Any], body: Any) -> dict[str, Any] | None:
    """``doc`` with the body's operations applied, if each sets a singular attribute to a value of its
    type; ``None`` when any operation is more than that (scim2-models must judge it)."""
    if not isinstance(body, dict) or body.keys() != {"schemas", "Operations"} or body["schemas"] != [_PATCH_SCHEMA]:
        return None
    operations = body["Operations"]
    if not isinstance(operations, list) or not operations:
        return None
    patched = dict(doc)
    touched: set[str] = set()
    for operation in operations:
        if not isinstance(operation, dict) or operation.keys() != _OPERATION_KEYS:
            return None
        verb, path, value = operation["op"], operation["path"], operation["value"]
        if not isinstance(verb, str) or verb.lower() not in _SET or not isinstance(path, str):
            return None
        target = _TARGETS.get(path.lower())
        if target is None or type(value) is not target[2]:
            return None
        container, key, _ = target
        if key == "userName" and isinstance(value, str) and not value.strip():
            return None  # refused by user_document, with its message
        if container is None:
            patched[key] = value
        else:
            patched[container] = {**(patched.get(container) or {}), key: value}
            touched.add(container)
    for container in touched:
        patched[container] = _ordered(patched[container], _ORDER[container])
    patched["schemas"] = [CORE_USER] + ([ENTERPRISE] if ENTERPRISE in patched else [])
    return _ordered(patched, _TOP_ORDER)


def full_patch(doc: dict[str, Any], user_id: str, body: Any, *, base_url: str) -> dict[str, Any]:
    """Any PATCH, through scim2-models: validated whole, applied in order, all or nothing."""
    try:
        current = UserModel.model_validate({**doc, "id": user_id}, scim_policy=POLICY)
        operations = PatchOp[UserModel].model_validate(
            body, scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=POLICY
        )
        operations.patch(current, scim_policy=POLICY)  # validates every value it assigns
        if current.id != user_id:
            raise Mutability(f"id is readOnly: cannot change it to '{current.id}'")
    except (ValidationError, SCIMException) as exc:
        raise as_broker_error(exc) from exc
    return user_document(current, base_url=base_url)


def patch_user_document(doc: dict[str, Any], user_id: str, body: Any, *, base_url: str) -> dict[str, Any]:
    """The stored document a PATCH body turns ``doc`` into (raises the BrokerError scim2-models would)."""
    patched = simple_patch(doc, body)
    return full_patch(doc, user_id, body, base_url=base_url) if patched is None else patched
