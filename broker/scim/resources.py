"""The wire edge: scim2-models resources <-> our tables (RFC 7643 §4 User, Group, enterprise extension).

scim2-models validates and serializes; the stored ``attributes`` JSON is its query-response dump
minus the attributes we compute (id, meta, groups, members) and the ones we never keep (password).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import email_validator
from pydantic import ValidationError
from scim2_models import (
    Context,
    EnterpriseUser,
    Group,
    ResponseParameters,
    SCIMException,
    ScimPolicy,
    User,
)

from broker.errors import (
    BadRequest,
    BrokerError,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    InvalidVersion,
    Mutability,
    NoTarget,
    TooMany,
)
from broker.scim.models import ScimGroup, ScimUser, ScimValue
from broker.scim.normalize import ENTERPRISE
from broker.scim.stored import StoredUser

__all__ = [
    "POLICY",
    "UserModel",
    "as_broker_error",
    "group_columns",
    "group_document",
    "render_group",
    "render_user",
    "shape",
    "unstorable",
    "user_columns",
    "user_document",
    "user_values",
    "validate_group",
    "validate_user",
]

UserModel = User[EnterpriseUser]
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)
"""Tolerances for real IdPs: Entra's remove-with-value removes only those values (never empties a
group) and its replace on a missing filtered value creates it; unknown attributes are ignored and
listed in the audit record instead of failing a whole provisioning cycle."""

# Email syntax is still checked (pydantic EmailStr), but RFC 6761 special-use names are accepted:
# directories hold corp.local addresses and test tenants use .test. Binding an email to a partner is
# decided by the verified-domain check, not by whether the domain is publicly routable.
email_validator.SPECIAL_USE_DOMAIN_NAMES.clear()

MULTI_VALUED = (
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "entitlements",
    "roles",
    "x509Certificates",
    "addresses",
)
_SCIM_TYPE_TO_ERROR: dict[str, type[BrokerError]] = {
    "invalidValue": InvalidValue,
    "invalidPath": InvalidPath,
    "invalidSyntax": InvalidSyntax,
    "mutability": Mutability,
    "noTarget": NoTarget,
    "tooMany": TooMany,
    "invalidVers": InvalidVersion,
}

M = TypeVar("M", bound=UserModel | Group)


def as_broker_error(exc: ValidationError | SCIMException) -> BrokerError:
    """Translate a scim2-models / pydantic refusal into our error tree with the right scimType."""
    if isinstance(exc, SCIMException):
        cls = _SCIM_TYPE_TO_ERROR.get(exc.scim_type, BadRequest if exc.status == 400 else BrokerError)
        return cls(str(exc))
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {}
    ctx = first.get("ctx") or {}
    scim_type = ctx.get("scim_type") if isinstance(ctx, dict) else None
    if first.get("type") == "mutability_error":
        scim_type = "mutability"
    elif first.get("type") in ("json_invalid", "model_type", "dict_type"):
        scim_type = "invalidSyntax"
    cls = _SCIM_TYPE_TO_ERROR.get(scim_type or "invalidValue", InvalidValue)
    parts = []
    for error in errors[:3]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "function-after")
        parts.append(f"{location}: {error.get('msg')}" if location else str(error.get("msg")))
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return cls("; ".join(parts) + more)


def _validate(model: type[M], payload: Any, ctx: Context) -> M:
    if not isinstance(payload, dict):
        raise InvalidSyntax("the request body must be a JSON object")
    try:
        return model.model_validate(payload, scim_ctx=ctx, scim_policy=POLICY)
    except (ValidationError, SCIMException) as exc:
        raise as_broker_error(exc) from exc


def validate_user(payload: Any, *, ctx: Context) -> UserModel:
    """A creation/replacement request body as a User with the enterprise extension."""
    return _validate(UserModel, payload, ctx)


def validate_group(payload: Any, *, ctx: Context) -> Group:
    """A creation/replacement request body as a Group."""
    return _validate(Group, payload, ctx)


def _stored(model: UserModel | Group, drop: tuple[str, ...]) -> dict[str, Any]:
    doc = model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    for key in drop:
        doc.pop(key, None)
    return doc


def user_document(model: UserModel, *, base_url: str) -> dict[str, Any]:
    """What we keep of a user: no id/meta (ours), no groups (computed), no password (never stored)."""
    doc = _stored(model, ("id", "meta", "groups", "password"))
    if not str(doc.get("userName") or "").strip():  # create, PUT and PATCH all pass through here
        raise InvalidValue("userName must be a non-empty string (RFC 7643 §4.1.1)")
    ext = doc.get(ENTERPRISE)
    if isinstance(ext, dict) and isinstance(ext.get("manager"), dict):
        manager = ext["manager"]
        manager.pop("displayName", None)
        if manager.get("value") and not manager.get("$ref"):
            manager["$ref"] = f"{base_url}/Users/{manager['value']}"
    if ext == {}:
        doc.pop(ENTERPRISE, None)
    schemas = [str(User.__schema__)] + ([ENTERPRISE] if ENTERPRISE in doc else [])
    doc["schemas"] = schemas
    return doc


def group_document(model: Group) -> dict[str, Any]:
    """What we keep of a group: no id/meta (ours), no members (in group_member)."""
    doc = _stored(model, ("id", "meta", "members"))
    if not str(doc.get("displayName") or "").strip():
        raise InvalidValue("displayName must be a non-empty string (RFC 7643 §4.2)")
    doc["schemas"] = [str(Group.__schema__)]
    return doc


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def fold(value: str) -> str:
    """Case folding for non-caseExact comparison and uniqueness; the same rule SQL lower() applies."""
    return value.lower()


_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable(text: str) -> bool:
    """Whether a string holds U+0000 or an unpaired surrogate: JSON escapes carry both, but PostgreSQL
    refuses U+0000 and no database (nor the audit digest) can encode a lone surrogate as UTF-8."""
    return "\x00" in text or _SURROGATE.search(text) is not None


def _limits(table: type[ScimUser] | type[ScimGroup] | type[ScimValue]) -> dict[str, int]:
    columns = table.__table__.c  # type: ignore[union-attr]
    return {c.name: c.type.length for c in columns if getattr(c.type, "length", None) is not None}


_LIMITS = {table: _limits(table) for table in (ScimUser, ScimGroup, ScimValue)}


def _fitting(table: type[ScimUser] | type[ScimGroup] | type[ScimValue], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` if every string fits its column, else InvalidValue.

    PostgreSQL refuses a longer string only when the row is written (a 500), where SQLite keeps it:
    checking first makes both databases answer the same 400.
    """
    limits = _LIMITS[table]
    for name, value in values.items():
        limit = limits.get(name)
        if limit is not None and isinstance(value, str) and len(value) > limit:
            label = name.replace("_", " ")
            raise InvalidValue(f"{label}: {len(value)} characters, more than the {limit} Entente keeps")
    return values


def user_columns(doc: dict[str, Any], *, active_if_unassigned: bool = True) -> dict[str, Any]:
    """The promoted, filterable columns of a stored user document.

    ``active`` is the effective state lifecycle consumers act on. When a PUT omits ``active`` or a
    PATCH removes it, the attribute is unassigned in the representation (RFC 7644 §3.5.2.2) but the
    effective state stays what it was (``active_if_unassigned``): a leaver is never reactivated by
    omission, and an active person is never dropped by it.
    """
    name = doc.get("name") or {}
    ext = doc.get(ENTERPRISE) or {}
    manager = ext.get("manager") or {}
    user_name = doc["userName"]
    return _fitting(
        ScimUser,
        {
            "user_name": user_name,
            "user_name_ci": fold(user_name),
            "external_id": _text(doc.get("externalId")),
            "active": doc["active"] if isinstance(doc.get("active"), bool) else active_if_unassigned,
            "display_name": _text(doc.get("displayName")),
            "nick_name": _text(doc.get("nickName")),
            "title": _text(doc.get("title")),
            "user_type": _text(doc.get("userType")),
            "preferred_language": _text(doc.get("preferredLanguage")),
            "locale": _text(doc.get("locale")),
            "timezone": _text(doc.get("timezone")),
            "profile_url": _text(doc.get("profileUrl")),
            "name_formatted": _text(name.get("formatted")),
            "name_family_name": _text(name.get("familyName")),
            "name_given_name": _text(name.get("givenName")),
            "name_middle_name": _text(name.get("middleName")),
            "name_honorific_prefix": _text(name.get("honorificPrefix")),
            "name_honorific_suffix": _text(name.get("honorificSuffix")),
            "employee_number": _text(ext.get("employeeNumber")),
            "cost_center": _text(ext.get("costCenter")),
            "organization": _text(ext.get("organization")),
            "division": _text(ext.get("division")),
            "department": _text(ext.get("department")),
            "manager_id": _text(manager.get("value")),
        },
    )


def user_values(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One index row per value of each multi-valued attribute (addresses index their ``formatted``)."""
    rows: list[dict[str, Any]] = []
    for attribute in MULTI_VALUED:
        for item in doc.get(attribute) or []:
            if not isinstance(item, dict):
                continue
            value = item.get("formatted") if attribute == "addresses" else item.get("value")
            value = value if isinstance(value, str) else None
            rows.append(
                {
                    "attribute": attribute,
                    "value": value,
                    "value_ci": fold(value) if value is not None else None,
                    "type": _text(item.get("type")),
                    "primary": item.get("primary") is True,
                    "display": _text(item.get("display")),
                }
            )
    return [_fitting(ScimValue, row) for row in rows]


def group_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """The promoted, filterable columns of a stored group document."""
    display_name = doc["displayName"]
    return _fitting(
        ScimGroup,
        {
            "display_name": display_name,
            "display_name_ci": fold(display_name),
            "external_id": _text(doc.get("externalId")),
        },
    )


def _meta(resource_type: str, row: StoredUser | ScimGroup, base_url: str) -> dict[str, Any]:
    endpoint = "Users" if resource_type == "User" else "Groups"
    return {
        "resourceType": resource_type,
        "created": row.created_at.isoformat().replace("+00:00", "Z"),
        "lastModified": row.updated_at.isoformat().replace("+00:00", "Z"),
        "location": f"{base_url}/{endpoint}/{row.id}",
        "version": etag(row.version),
    }


def etag(version: int) -> str:
    """The weak entity tag of a resource version (RFC 7644 §3.14)."""
    return f'W/"{version}"'


def render_user(row: StoredUser, *, groups: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
    """The full SCIM representation of a stored user."""
    doc = dict(row.attributes)
    doc["id"] = row.id
    if groups:
        doc["groups"] = [{**g, "$ref": f"{base_url}/Groups/{g['value']}"} for g in groups]
    doc["meta"] = _meta("User", row, base_url)
    return doc


def render_group(row: ScimGroup, *, members: list[dict[str, Any]] | None, base_url: str) -> dict[str, Any]:
    """The full SCIM representation of a stored group; ``members=None`` means not loaded (excluded)."""
    doc = dict(row.attributes)
    doc["id"] = row.id
    if members:
        doc["members"] = [
            {**m, "$ref": f"{base_url}/{'Users' if m.get('type') == 'User' else 'Groups'}/{m['value']}"}
            for m in members
        ]
    doc["meta"] = _meta("Group", row, base_url)
    return doc


def shape(
    doc: dict[str, Any],
    model: type[UserModel] | type[Group],
    *,
    attributes: list[str] | None,
    excluded: list[str] | None,
) -> dict[str, Any]:
    """Apply RFC 7644 §3.9 ``attributes`` / ``excludedAttributes`` (``returned`` rules included)."""
    if not attributes and not excluded:
        return doc
    try:
        params = ResponseParameters[model].model_validate(  # type: ignore[valid-type]
            {"attributes": attributes, "excluded_attributes": excluded}
        )
        instance = model.model_validate(doc, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=POLICY)
        return instance.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=params)
    except (ValidationError, SCIMException) as exc:
        error = as_broker_error(exc)
        raise InvalidPath(f"attributes/excludedAttributes: {error.detail}") from exc
