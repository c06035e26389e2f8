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
from broker.scim.auth import ScimCaller, ScimCallerDep, confirm_caller
from broker.scim.common import etag_matches
from broker.scim.filters import ResourceKind
from broker.scim.listing import ListQuery, integer_parameter, list_resources, render_groups, render_users
from broker.scim.models import ScimGroup
from broker.scim.resources import etag, unstorable
from broker.scim.stored import StoredUser
from broker.threads import in_thread

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


def _parse_body(raw: bytes, limit: int | None = None) -> Any:
    """The JSON body, checked; run after ``confirm_caller``, so a refused token is told so first."""
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


Work = Callable[[Session, ScimCaller], Response]
"""``work(session, caller)``: a request's database part, from the caller's confirmation to its response."""


async def _in_session(request: Request, caller: ScimCaller, work: Work) -> Response:
    """Confirm the caller, then run the request's work, rendering included, in ONE thread-pool call
    and one session.

    Every endpoint is async and so are its dependencies, so a request crosses to a thread exactly
    once (each hop is a context switch and a fight for the GIL with the event loop), in the app's
    pool of as many threads as the database pool has connections (``broker.threads``). Parameters and
    bodies are checked inside ``work``, after the confirmation, so a revoked token is refused before
    anything about the request is judged. The session closes, rolling back anything uncommitted,
    before the thread returns.
    """
    engine = request.app.state.engine

    def run() -> Response:
        with Session(engine, expire_on_commit=False) as session:
            return work(session, confirm_caller(session, caller))

    return await in_thread(request.app.state, run)


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
    session: Session, caller: ScimCaller, row: StoredUser | ScimGroup, request: Request, status: int = 200
) -> Response:
    params = _params(request)
    attributes, excluded = _split(params.get("attributes")), _split(params.get("excludedattributes"))
    if isinstance(row, StoredUser):
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
async def get_service_provider_config(request: Request, caller: ScimCallerDep) -> Response:
    def work(_: Session, caller: ScimCaller) -> Response:
        _no_filter(request)
        return ScimResponse(discovery.service_provider_config(caller.settings, caller.base_url))

    return await _in_session(request, caller, work)


@router.get("/ResourceTypes")
async def get_resource_types(request: Request, caller: ScimCallerDep) -> Response:
    def work(_: Session, caller: ScimCaller) -> Response:
        _no_filter(request)
        return ScimResponse(discovery.resource_types(caller.base_url))

    return await _in_session(request, caller, work)


@router.get("/ResourceTypes/{name}")
async def get_resource_type(name: str, request: Request, caller: ScimCallerDep) -> Response:
    return await _in_session(
        request, caller, lambda _, caller: ScimResponse(discovery.resource_type(name, caller.base_url))
    )


@router.get("/Schemas")
async def get_schemas(request: Request, caller: ScimCallerDep) -> Response:
    def work(_: Session, caller: ScimCaller) -> Response:
        _no_filter(request)
        return ScimResponse(discovery.schemas(caller.base_url))

    return await _in_session(request, caller, work)


@router.get("/Schemas/{urn}")
async def get_schema(urn: str, request: Request, caller: ScimCallerDep) -> Response:
    return await _in_session(request, caller, lambda _, caller: ScimResponse(discovery.schema(urn, caller.base_url)))


@router.api_route("/Me", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def me(request: Request, caller: ScimCallerDep) -> Response:
    def work(_: Session, __: ScimCaller) -> Response:
        raise NotSupported("/Me is not supported: partner IT provisions through /Users")

    return await _in_session(request, caller, work)


# -- list and search ------------------------------------------------------------------------------
def _list(session: Session, caller: ScimCaller, kind: ResourceKind, query: ListQuery) -> Response:
    return ScimResponse(list_resources(session=session, caller=caller, kind=kind, query=query))


@router.get("/Users")
async def list_users(request: Request, caller: ScimCallerDep) -> Response:
    return await _in_session(
        request, caller, lambda session, caller: _list(session, caller, "User", _list_query(_params(request)))
    )


@router.get("/Groups")
async def list_groups(request: Request, caller: ScimCallerDep) -> Response:
    return await _in_session(
        request, caller, lambda session, caller: _list(session, caller, "Group", _list_query(_params(request)))
    )


async def _search(request: Request, caller: ScimCaller, kind: ResourceKind | None) -> Response:
    """POST .search on one type, or on both at the root (``kind`` None)."""
    raw = await request.body()

    def work(session: Session, caller: ScimCaller) -> Response:
        query = _search_query(_parse_body(raw))
        return _search_both(session, caller, query) if kind is None else _list(session, caller, kind, query)

    return await _in_session(request, caller, work)


@router.post("/Users/.search")
async def search_users(request: Request, caller: ScimCallerDep) -> Response:
    return await _search(request, caller, "User")


@router.post("/Groups/.search")
async def search_groups(request: Request, caller: ScimCallerDep) -> Response:
    return await _search(request, caller, "Group")


@router.post("/.search")
async def search_all(request: Request, caller: ScimCallerDep) -> Response:
    """Root search (RFC 7644 §3.4.3): Users then Groups, one page over both."""
    return await _search(request, caller, None)


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
Write = Callable[[Session, ScimCaller, Any, str | None], StoredUser | ScimGroup]
"""``write(session, caller, payload, if_match)``: one service call, uncommitted."""


async def _write(request: Request, caller: ScimCaller, write: Write, *, status: int = 200) -> Response:
    """Read the body on the event loop; check it, store, commit and render in the thread pool.

    The change is committed (durably: SQLite ``synchronous=FULL``, PostgreSQL's commit) before we answer.
    """
    raw = await request.body()
    if_match = request.headers.get("if-match")

    def work(session: Session, caller: ScimCaller) -> Response:
        row = write(session, caller, _parse_body(raw), if_match)
        session.commit()
        return _resource_response(session, caller, row, request, status=status)

    return await _in_session(request, caller, work)


async def _delete(
    request: Request, caller: ScimCaller, delete: Callable[[Session, ScimCaller, str | None], None]
) -> Response:
    """``delete(session, caller, if_match)``, committed, then 204."""
    if_match = request.headers.get("if-match")

    def work(session: Session, caller: ScimCaller) -> Response:
        delete(session, caller, if_match)
        session.commit()
        return Response(status_code=204)

    return await _in_session(request, caller, work)


def _read(session: Session, caller: ScimCaller, request: Request, row: StoredUser | ScimGroup) -> Response:
    """GET of one resource, honouring If-None-Match (RFC 7644 §3.14)."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag_matches(if_none_match, row.version):
        return _not_modified(row.version)
    return _resource_response(session, caller, row, request)


@router.post("/Users")
async def post_user(request: Request, caller: ScimCallerDep) -> Response:
    def write(session: Session, caller: ScimCaller, payload: Any, _: str | None) -> StoredUser:
        return users.create_user(session=session, caller=caller, payload=payload)

    return await _write(request, caller, write, status=201)


@router.get("/Users/{user_id}")
async def get_user(user_id: str, request: Request, caller: ScimCallerDep) -> Response:
    def work(session: Session, caller: ScimCaller) -> Response:
        return _read(session, caller, request, users.get_user(session=session, caller=caller, user_id=user_id))

    return await _in_session(request, caller, work)


@router.put("/Users/{user_id}")
async def put_user(user_id: str, request: Request, caller: ScimCallerDep) -> Response:
    def write(session: Session, caller: ScimCaller, payload: Any, if_match: str | None) -> StoredUser:
        return users.replace_user(session=session, caller=caller, user_id=user_id, payload=payload, if_match=if_match)

    return await _write(request, caller, write)


@router.patch("/Users/{user_id}")
async def patch_user(user_id: str, request: Request, caller: ScimCallerDep) -> Response:
    def write(session: Session, caller: ScimCaller, payload: Any, if_match: str | None) -> StoredUser:
        return users.patch_user(session=session, caller=caller, user_id=user_id, payload=payload, if_match=if_match)

    return await _write(request, caller, write)


@router.delete("/Users/{user_id}")
async def delete_user(user_id: str, request: Request, caller: ScimCallerDep) -> Response:
    def delete(session: Session, caller: ScimCaller, if_match: str | None) -> None:
        users.delete_user(session=session, caller=caller, user_id=user_id, if_match=if_match)

    return await _delete(request, caller, delete)


@router.post("/Groups")
async def post_group(request: Request, caller: ScimCallerDep) -> Response:
    def write(session: Session, caller: ScimCaller, payload: Any, _: str | None) -> ScimGroup:
        return groups.create_group(session=session, caller=caller, payload=payload)

    return await _write(request, caller, write, status=201)


@router.get("/Groups/{group_id}")
async def get_group(group_id: str, request: Request, caller: ScimCallerDep) -> Response:
    def work(session: Session, caller: ScimCaller) -> Response:
        return _read(session, caller, request, groups.get_group(session=session, caller=caller, group_id=group_id))

    return await _in_session(request, caller, work)


@router.put("/Groups/{group_id}")
async def put_group(group_id: str, request: Request, caller: ScimCallerDep) -> Response:
    def write(session: Session, caller: ScimCaller, payload: Any, if_match: str | None) -> ScimGroup:
        return groups.replace_group(
            session=session, caller=caller, group_id=group_id, payload=payload, if_match=if_match
        )

    return await _write(request, caller, write)


@router.patch("/Groups/{group_id}")
async def patch_group(group_id: str, request: Request, caller: ScimCallerDep) -> Response:
    """200 with the group, members rendered unless the client excluded them (Entra sends
    excludedAttributes=members on reads to keep large groups cheap)."""

    def write(session: Session, caller: ScimCaller, payload: Any, if_match: str | None) -> ScimGroup:
        return groups.patch_group(session=session, caller=caller, group_id=group_id, payload=payload, if_match=if_match)

    return await _write(request, caller, write)


@router.delete("/Groups/{group_id}")
async def delete_group(group_id: str, request: Request, caller: ScimCallerDep) -> Response:
    def delete(session: Session, caller: ScimCaller, if_match: str | None) -> None:
        groups.delete_group(session=session, caller=caller, group_id=group_id, if_match=if_match)

    return await _delete(request, caller, delete)


# -- Bulk -----------------------------------------------------------------------------------------
@router.post("/Bulk")
async def post_bulk(request: Request, caller: ScimCallerDep) -> Response:
    limit = caller.settings.scim_bulk_max_payload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:  # refused before a byte is read
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds maxPayloadSize {limit}")
    raw = await request.body()

    def work(session: Session, caller: ScimCaller) -> Response:
        body = bulk.run_bulk(session=session, caller=caller, payload=_parse_body(raw, limit=limit))
        session.commit()
        return ScimResponse(body)

    return await _in_session(request, caller, work)
