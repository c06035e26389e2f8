"""The SCIM 2.0 HTTP surface at /scim/v2 (RFC 7644 §3): parses requests, calls the services,
commits, and renders every error as an RFC 7644 §3.12 Error body."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from scim2_models import Error, SearchRequest
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from broker.db import SessionDep
from broker.errors import (
    BrokerError,
    Forbidden,
    InvalidSyntax,
    InvalidValue,
    NotModified,
    NotSupported,
    PayloadTooLarge,
    Unauthorized,
)
from broker.scim import bulk, discovery, groups, users
from broker.scim.auth import ScimCaller, ScimCallerDep
from broker.scim.common import etag_matches
from broker.scim.filters import ResourceKind
from broker.scim.listing import ListQuery, integer_parameter, list_resources, render_groups, render_users
from broker.scim.models import ScimGroup, ScimUser
from broker.scim.resources import etag, unstorable

__all__ = ["SCIM_MEDIA_TYPE", "error_response", "router"]

SCIM_MEDIA_TYPE = "application/scim+json"
ERROR_SCHEMA = str(Error.__schema__)
SEARCH_REQUEST = str(SearchRequest.__schema__)
log = logging.getLogger("entente.scim")
router = APIRouter()


class ScimResponse(JSONResponse):
    media_type = SCIM_MEDIA_TYPE


def error_response(error: BrokerError) -> Response:
    """An RFC 7644 §3.12 Error body (``status`` is a string) with the matching HTTP status."""
    if isinstance(error, NotModified):
        return Response(status_code=304)
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(error.status), "detail": error.detail}
    if error.scim_type:
        body["scimType"] = error.scim_type
    headers = {}
    if error.status == 401:
        challenge = 'Bearer realm="entente-scim"'
        if not isinstance(error, Unauthorized) or error.credentials_sent:
            challenge += ', error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    return ScimResponse(body, status_code=error.status, headers=headers)


async def _body(request: Request, limit: int | None = None) -> Any:
    raw = await request.body()
    if limit is not None and len(raw) > limit:
        raise PayloadTooLarge(f"request body of {len(raw)} bytes exceeds maxPayloadSize {limit}")
    if not raw.strip():
        raise InvalidSyntax("the request body is empty; a JSON object is required")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidSyntax(f"the request body is not valid JSON: {exc}") from exc
    _refuse_unstorable(document)
    return document


def _refuse_unstorable(document: Any) -> None:
    """400 if any key or string of the body holds U+0000 or a lone surrogate (valid JSON escapes both):
    checked once here, rather than failing as a 500 wherever such a string meets the database."""
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if unstorable(item):
                raise InvalidValue("the request body holds a string with U+0000 or an unpaired surrogate")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


async def _off_loop(work: Callable[[], Response]) -> Response:
    """Run the synchronous database part of an async handler in the thread pool, off the event loop."""
    return await run_in_threadpool(work)


def _params(request: Request) -> dict[str, str]:
    """Query parameters by lower-cased name (Okta and OneLogin vary the casing)."""
    return {k.lower(): v for k, v in request.query_params.items()}


def _split(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        items = [p.strip() for p in raw.split(",") if p.strip()]
    elif isinstance(raw, list) and all(isinstance(p, str) for p in raw):
        items = [p.strip() for p in raw if p.strip()]
    else:
        raise InvalidValue("attributes and excludedAttributes must be lists of attribute names")
    return items or None


def _list_query(params: dict[str, Any]) -> ListQuery:
    filter_text = params.get("filter")
    if filter_text is not None and not isinstance(filter_text, str):
        raise InvalidValue("filter must be a string")
    for name in ("sortby", "sortorder"):
        if params.get(name) is not None and not isinstance(params[name], str):
            raise InvalidValue(f"{name} must be a string")
    return ListQuery(
        filter=filter_text,
        sort_by=params.get("sortby"),
        sort_order=params.get("sortorder"),
        start_index=integer_parameter("startIndex", params.get("startindex")) or 1,
        count=integer_parameter("count", params.get("count")),
        attributes=_split(params.get("attributes")),
        excluded_attributes=_split(params.get("excludedattributes")),
    )


def _search_query(body: Any) -> ListQuery:
    if not isinstance(body, dict):
        raise InvalidSyntax("a SearchRequest must be a JSON object")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or SEARCH_REQUEST.lower() not in [str(s).lower() for s in schemas]:
        raise InvalidSyntax(f"schemas must contain {SEARCH_REQUEST}")
    return _list_query({k.lower(): v for k, v in body.items()})


def _resource_response(
    session: Session, caller: ScimCaller, row: ScimUser | ScimGroup, request: Request, status: int = 200
) -> Response:
    params = _params(request)
    attributes, excluded = _split(params.get("attributes")), _split(params.get("excludedattributes"))
    if isinstance(row, ScimUser):
        body = render_users(session=session, caller=caller, rows=[row], attributes=attributes, excluded=excluded)[0]
        endpoint = "Users"
    else:
        body = render_groups(session=session, caller=caller, rows=[row], attributes=attributes, excluded=excluded)[0]
        endpoint = "Groups"
    headers = {"ETag": etag(row.version)}
    if status == 201:
        headers["Location"] = f"{caller.base_url}/{endpoint}/{row.id}"
    return ScimResponse(body, status_code=status, headers=headers)


def _not_modified(version: int) -> Response:
    """304 for a matching If-None-Match (RFC 7644 §3.14); RFC 9110 §15.4.5 requires the ETag on it."""
    return Response(status_code=304, headers={"ETag": etag(version)})


# -- discovery (RFC 7644 §4) ----------------------------------------------------------------------
def _no_filter(request: Request) -> None:
    if "filter" in _params(request):
        raise Forbidden("filtering is not supported on discovery endpoints")


@router.get("/ServiceProviderConfig")
def get_service_provider_config(request: Request, caller: ScimCallerDep) -> Response:
    _no_filter(request)
    return ScimResponse(discovery.service_provider_config(caller.settings, caller.base_url))


@router.get("/ResourceTypes")
def get_resource_types(request: Request, caller: ScimCallerDep) -> Response:
    _no_filter(request)
    return ScimResponse(discovery.resource_types(caller.base_url))


@router.get("/ResourceTypes/{name}")
def get_resource_type(name: str, caller: ScimCallerDep) -> Response:
    return ScimResponse(discovery.resource_type(name, caller.base_url))


@router.get("/Schemas")
def get_schemas(request: Request, caller: ScimCallerDep) -> Response:
    _no_filter(request)
    return ScimResponse(discovery.schemas(caller.base_url))


@router.get("/Schemas/{urn}")
def get_schema(urn: str, caller: ScimCallerDep) -> Response:
    return ScimResponse(discovery.schema(urn, caller.base_url))


@router.api_route("/Me", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def me(caller: ScimCallerDep) -> Response:
    raise NotSupported("/Me is not supported: partner IT provisions through /Users")


# -- list and search ------------------------------------------------------------------------------
def _list(session: Session, caller: ScimCaller, kind: ResourceKind, query: ListQuery) -> Response:
    return ScimResponse(list_resources(session=session, caller=caller, kind=kind, query=query))


@router.get("/Users")
def list_users(request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    return _list(session, caller, "User", _list_query(_params(request)))


@router.get("/Groups")
def list_groups(request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    return _list(session, caller, "Group", _list_query(_params(request)))


@router.post("/Users/.search")
async def search_users(request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    query = _search_query(await _body(request))
    return await _off_loop(lambda: _list(session, caller, "User", query))


@router.post("/Groups/.search")
async def search_groups(request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    query = _search_query(await _body(request))
    return await _off_loop(lambda: _list(session, caller, "Group", query))


@router.post("/.search")
async def search_all(request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    """Root search (RFC 7644 §3.4.3): Users then Groups, one page over both."""
    query = _search_query(await _body(request))
    return await _off_loop(lambda: _search_both(session, caller, query))


def _search_both(session: Session, caller: ScimCaller, query: ListQuery) -> Response:
    query = ListQuery(**{**query.__dict__, "root": True})
    count = caller.settings.scim_default_count if query.count is None else query.count
    count = min(max(count, 0), caller.settings.scim_max_results)
    start = max(query.start_index, 1)
    # First pass: totals only.
    zero = ListQuery(**{**query.__dict__, "count": 0, "start_index": 1})
    user_total = list_resources(session=session, caller=caller, kind="User", query=zero)["totalResults"]
    group_total = list_resources(session=session, caller=caller, kind="Group", query=zero)["totalResults"]
    resources: list[dict[str, Any]] = []
    if start <= user_total and count:
        page = list_resources(
            session=session,
            caller=caller,
            kind="User",
            query=ListQuery(**{**query.__dict__, "start_index": start, "count": count}),
        )
        resources.extend(page.get("Resources", []))
    remaining = count - len(resources)
    if remaining > 0:
        group_start = max(start - user_total, 1)
        page = list_resources(
            session=session,
            caller=caller,
            kind="Group",
            query=ListQuery(**{**query.__dict__, "start_index": group_start, "count": remaining}),
        )
        resources.extend(page.get("Resources", []))
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": user_total + group_total,
        "startIndex": start,
        "itemsPerPage": len(resources),
    }
    if resources:
        body["Resources"] = resources
    return ScimResponse(body)


# -- Users and Groups (RFC 7644 §3.3-§3.6) --------------------------------------------------------
async def _write(
    request: Request,
    session: Session,
    caller: ScimCaller,
    write: Callable[[Any, str | None], ScimUser | ScimGroup],
    *,
    status: int = 200,
) -> Response:
    """Read the body on the event loop; validate, store, commit and render in the thread pool.

    ``write(payload, if_match)`` is the service call; the change is committed before we answer.
    """
    payload = await _body(request)
    if_match = request.headers.get("if-match")

    def work() -> Response:
        row = write(payload, if_match)
        session.commit()
        return _resource_response(session, caller, row, request, status=status)

    return await _off_loop(work)


def _read(session: Session, caller: ScimCaller, request: Request, row: ScimUser | ScimGroup) -> Response:
    """GET of one resource, honouring If-None-Match (RFC 7644 §3.14)."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag_matches(if_none_match, row.version):
        return _not_modified(row.version)
    return _resource_response(session, caller, row, request)


@router.post("/Users")
async def post_user(request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    def write(payload: Any, _: str | None) -> ScimUser:
        return users.create_user(session=session, caller=caller, payload=payload)

    return await _write(request, session, caller, write, status=201)


@router.get("/Users/{user_id}")
def get_user(user_id: str, request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    return _read(session, caller, request, users.get_user(session=session, caller=caller, user_id=user_id))


@router.put("/Users/{user_id}")
async def put_user(user_id: str, request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    def write(payload: Any, if_match: str | None) -> ScimUser:
        return users.replace_user(session=session, caller=caller, user_id=user_id, payload=payload, if_match=if_match)

    return await _write(request, session, caller, write)


@router.patch("/Users/{user_id}")
async def patch_user(user_id: str, request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    def write(payload: Any, if_match: str | None) -> ScimUser:
        return users.patch_user(session=session, caller=caller, user_id=user_id, payload=payload, if_match=if_match)

    return await _write(request, session, caller, write)


@router.delete("/Users/{user_id}")
def delete_user(user_id: str, request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    users.delete_user(session=session, caller=caller, user_id=user_id, if_match=request.headers.get("if-match"))
    session.commit()
    return Response(status_code=204)


@router.post("/Groups")
async def post_group(request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    def write(payload: Any, _: str | None) -> ScimGroup:
        return groups.create_group(session=session, caller=caller, payload=payload)

    return await _write(request, session, caller, write, status=201)


@router.get("/Groups/{group_id}")
def get_group(group_id: str, request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    return _read(session, caller, request, groups.get_group(session=session, caller=caller, group_id=group_id))


@router.put("/Groups/{group_id}")
async def put_group(group_id: str, request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    def write(payload: Any, if_match: str | None) -> ScimGroup:
        return groups.replace_group(
            session=session, caller=caller, group_id=group_id, payload=payload, if_match=if_match
        )

    return await _write(request, session, caller, write)


@router.patch("/Groups/{group_id}")
async def patch_group(group_id: str, request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    """200 with the group, members rendered unless the client excluded them (Entra sends
    excludedAttributes=members on reads to keep large groups cheap)."""

    def write(payload: Any, if_match: str | None) -> ScimGroup:
        return groups.patch_group(session=session, caller=caller, group_id=group_id, payload=payload, if_match=if_match)

    return await _write(request, session, caller, write)


@router.delete("/Groups/{group_id}")
def delete_group(group_id: str, request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    groups.delete_group(session=session, caller=caller, group_id=group_id, if_match=request.headers.get("if-match"))
    session.commit()
    return Response(status_code=204)


# -- Bulk -----------------------------------------------------------------------------------------
@router.post("/Bulk")
async def post_bulk(request: Request, session: SessionDep, caller: ScimCallerDep) -> Response:
    limit = caller.settings.scim_bulk_max_payload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds maxPayloadSize {limit}")
    payload = await _body(request, limit=limit)

    def work() -> Response:
        body = bulk.run_bulk(session=session, caller=caller, payload=payload)
        session.commit()
        return ScimResponse(body)

    return await _off_loop(work)
