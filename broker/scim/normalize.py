"""Rewrites what real IdPs send into RFC 7643/7644 form before strict validation.

Each rewrite turns a known deviation into the one RFC payload it can only mean, so it is applied to
every partner (no per-IdP switch can make a well-formed request mean something else):

- OneLogin's pre-RFC URNs ``urn:scim:schemas:core:2.0`` / ``urn:scim:schemas:extension:enterprise:2.0``
  (authentik#11249) become the RFC URNs, in ``schemas`` and as extension keys.
- Schema URNs we do not serve (Entra's ``http://schemas.microsoft.com/.../ADSCIM/2.0/Group``) are dropped
  from ``schemas``; the caller records them as ignored.
- Entra's enterprise ``manager`` as a bare string (and in PATCH values) becomes ``{"value": ...}``;
  a manager without ``$ref`` gets ours, since scim2-models requires it on requests.
- PATCH ``op`` values are matched case-insensitively by scim2-models (Entra sends ``Replace``), and
  ``"False"``/``"True"`` strings are read as booleans by it; nothing to do here for those.
"""

from __future__ import annotations

from typing import Any

from scim2_models import EnterpriseUser, Group, User

__all__ = ["CORE_GROUP", "CORE_USER", "ENTERPRISE", "normalize_patch", "normalize_resource"]

CORE_USER = str(User.__schema__)
CORE_GROUP = str(Group.__schema__)
ENTERPRISE = str(EnterpriseUser.__schema__)
_LEGACY = {
    "urn:scim:schemas:core:2.0": None,  # resolved per resource type
    "urn:scim:schemas:extension:enterprise:2.0": ENTERPRISE,
}


def _manager_ref(value: Any, base_url: str) -> Any:
    if isinstance(value, str):
        value = {"value": value}
    if isinstance(value, dict) and value.get("value") and not any(k.lower() == "$ref" for k in value):
        value = {**value, "$ref": f"{base_url}/Users/{value['value']}"}
    return value


def _fix_extension(ext: Any, base_url: str) -> Any:
    if not isinstance(ext, dict):
        return ext
    return {k: (_manager_ref(v, base_url) if k.lower() == "manager" else v) for k, v in ext.items()}


def normalize_resource(payload: dict[str, Any], *, core: str, base_url: str) -> tuple[dict[str, Any], list[str]]:
    """Return the RFC form of a POST/PUT body and the schema URNs dropped from it."""
    known = {core.lower(): core} | ({ENTERPRISE.lower(): ENTERPRISE} if core == CORE_USER else {})
    body: dict[str, Any] = {}
    for key, value in payload.items():
        lowered = key.lower()
        if lowered in _LEGACY:
            key = _LEGACY[lowered] or core
            lowered = key.lower()
        if lowered == ENTERPRISE.lower() and core == CORE_USER:
            value = _fix_extension(value, base_url)
            key = ENTERPRISE
        body[key] = value
    schemas = body.get("schemas")
    dropped: list[str] = []
    if isinstance(schemas, list):
        kept: list[str] = []
        for urn in schemas:
            if not isinstance(urn, str):
                kept.append(urn)  # let validation refuse it precisely
                continue
            canonical = _LEGACY.get(urn.lower(), urn) or core
            if canonical.lower() in known:
                if known[canonical.lower()] not in kept:
                    kept.append(known[canonical.lower()])
            else:
                dropped.append(urn)
        body["schemas"] = kept
    return body, dropped


def normalize_patch(payload: dict[str, Any], *, base_url: str) -> dict[str, Any]:
    """Return the RFC form of a PATCH body (manager strings and legacy URNs in paths and values)."""
    operations = payload.get("Operations", payload.get("operations"))
    if not isinstance(operations, list):
        return payload
    fixed: list[Any] = []
    for operation in operations:
        if not isinstance(operation, dict):
            fixed.append(operation)
            continue
        op = dict(operation)
        path = op.get("path")
        if isinstance(path, str):
            for legacy, modern in (("urn:scim:schemas:extension:enterprise:2.0", ENTERPRISE),):
                if path.lower().startswith(legacy + ":"):
                    path = modern + path[len(legacy) :]
            op["path"] = path
            if path.lower() == f"{ENTERPRISE}:manager".lower() and "value" in op:
                op["value"] = _manager_ref(op["value"], base_url)
        value = op.get("value")
        if isinstance(value, dict):
            value = dict(value)
            for key in list(value):
                if key.lower() == f"{ENTERPRISE}:manager".lower():
                    value[key] = _manager_ref(value[key], base_url)
                elif key.lower() == ENTERPRISE.lower():
                    value[key] = _fix_extension(value[key], base_url)
            op["value"] = value
        fixed.append(op)
    return {**payload, "Operations": fixed}
