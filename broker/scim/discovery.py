"""RFC 7644 §4 discovery: ServiceProviderConfig, ResourceTypes and Schemas, true to what we serve."""

from __future__ import annotations

from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    ListResponse,
    Patch,
    ResourceType,
    SchemaExtension,
    ServiceProviderConfig,
    Sort,
    User,
)

from broker.errors import NotFound
from broker.settings import Settings

__all__ = ["resource_type", "resource_types", "schema", "schemas", "service_provider_config"]

_DUMP = Context.RESOURCE_QUERY_RESPONSE
_LIST = str(ListResponse.__schema__)
_DOCS = "https://github.com/entente/entente#scim-20-for-partner-it"


def service_provider_config(settings: Settings, base_url: str) -> dict[str, Any]:
    """What the SCIM server supports; clients (authentik, Entra) negotiate from it, so it must be exact."""
    config = ServiceProviderConfig(
        documentation_uri=_DOCS,
        patch=Patch(supported=True),
        bulk=Bulk(
            supported=True,
            max_operations=settings.scim_bulk_max_operations,
            max_payload_size=settings.scim_bulk_max_payload_bytes,
        ),
        filter=Filter(supported=True, max_results=settings.scim_max_results),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        authentication_schemes=[
            AuthenticationScheme(
                type="oauthbearertoken",
                name="Partner bearer token",
                description="Per-partner token from `entente partner token SLUG`, as 'Authorization: Bearer <token>'.",
                spec_uri="https://www.rfc-editor.org/rfc/rfc6750",
                primary=True,
            )
        ],
    )
    body = config.model_dump(scim_ctx=_DUMP)
    body["meta"] = {"resourceType": "ServiceProviderConfig", "location": f"{base_url}/ServiceProviderConfig"}
    return body


def _resource_types() -> list[ResourceType]:
    return [
        ResourceType(
            id="User",
            name="User",
            endpoint="/Users",
            description="A partner's person",
            schema_=str(User.__schema__),
            schema_extensions=[SchemaExtension(schema_=str(EnterpriseUser.__schema__), required=False)],
        ),
        ResourceType(
            id="Group",
            name="Group",
            endpoint="/Groups",
            description="A partner's group",
            schema_=str(Group.__schema__),
        ),
    ]


def _rt_body(rt: ResourceType, base_url: str) -> dict[str, Any]:
    body = rt.model_dump(scim_ctx=_DUMP)
    body["meta"] = {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{rt.id}"}
    return body


def resource_types(base_url: str) -> dict[str, Any]:
    """ListResponse of our two resource types."""
    items = [_rt_body(rt, base_url) for rt in _resource_types()]
    return {
        "schemas": [_LIST],
        "totalResults": len(items),
        "startIndex": 1,
        "itemsPerPage": len(items),
        "Resources": items,
    }


def resource_type(name: str, base_url: str) -> dict[str, Any]:
    """One resource type by id (case-insensitive), or NotFound."""
    for rt in _resource_types():
        if rt.id and rt.id.lower() == name.lower():
            return _rt_body(rt, base_url)
    raise NotFound(f"ResourceType '{name}' not found")


def _schema_bodies(base_url: str) -> list[dict[str, Any]]:
    bodies = []
    for model in (User, EnterpriseUser, Group):
        body = model.to_schema().model_dump(scim_ctx=_DUMP)
        body["meta"] = {"resourceType": "Schema", "location": f"{base_url}/Schemas/{body['id']}"}
        bodies.append(body)
    return bodies


def schemas(base_url: str) -> dict[str, Any]:
    """ListResponse of the User, enterprise User and Group schemas (Entra fetches it on save)."""
    items = _schema_bodies(base_url)
    return {
        "schemas": [_LIST],
        "totalResults": len(items),
        "startIndex": 1,
        "itemsPerPage": len(items),
        "Resources": items,
    }


def schema(urn: str, base_url: str) -> dict[str, Any]:
    """One schema by URN (case-insensitive), or NotFound."""
    for body in _schema_bodies(base_url):
        if str(body["id"]).lower() == urn.lower():
            return body
    raise NotFound(f"Schema '{urn}' not found")
