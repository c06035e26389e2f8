"""RFC 7644 §3.4.2 list and search: filter, sort, paginate, select attributes, all in SQL."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from scim2_models import Group, ListResponse
from sqlalchemy import Select, bindparam, func, select
from sqlmodel import Session

from broker.errors import InvalidValue
from broker.scim.auth import ScimCaller
from broker.scim.filters import ResourceKind, build_filter, equality, equality_predicate, sort_key
from broker.scim.groups import groups_of_users, members_of_groups
from broker.scim.models import ScimGroup
from broker.scim.normalize import CORE_GROUP, CORE_USER
from broker.scim.resources import UserModel, render_group, render_user, shape
from broker.scim.stored import USER_COLUMNS, USER_TABLE, StoredUser

__all__ = ["ListQuery", "list_resources", "render_groups", "render_users", "wants_members"]

LIST_RESPONSE = str(ListResponse.__schema__)
_GROUP_TABLE = ScimGroup.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ListQuery:
    """The parameters of a GET list or a POST /.search, already type-checked."""

    filter: str | None = None
    sort_by: str | None = None
    sort_order: str | None = None
    start_index: int = 1
    count: int | None = None
    attributes: list[str] | None = None
    excluded_attributes: list[str] | None = None
    root: bool = False
    """A root POST /.search over both types: the other type's attributes have no value (RFC 7644 §3.4.2.2)."""


def integer_parameter(name: str, raw: Any) -> int | None:
    """startIndex / count as integers; a non-integer is 400 invalidValue, not a crash."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise InvalidValue(f"{name} must be an integer")
    if isinstance(raw, int):
        return raw
    try:
        return int(str(raw).strip())
    except ValueError as exc:
        raise InvalidValue(f"{name} must be an integer, got {raw!r}") from exc


def _wants(attribute: str, core: str, attributes: list[str] | None, excluded: list[str] | None) -> bool:
    """Whether a response carries ``attribute`` (a ``returned: default`` one) under RFC 7644 §3.9."""
    prefix = core.lower() + ":"

    def names(items: list[str] | None) -> set[str]:
        return {i.strip().lower().removeprefix(prefix) for i in items or []}

    if attributes:
        return any(n == attribute or n.startswith(attribute + ".") for n in names(attributes))
    return attribute not in names(excluded)


def wants_members(attributes: list[str] | None, excluded: list[str] | None) -> bool:
    """Whether a group response carries members (Entra always sends excludedAttributes=members)."""
    return _wants("members", CORE_GROUP, attributes, excluded)


def render_users(
    *,
    session: Session,
    caller: ScimCaller,
    rows: list[StoredUser],
    attributes: list[str] | None = None,
    excluded: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Full or attribute-selected representations of users; the groups of those in any are loaded in
    one query, and only when the response will carry them."""
    members = [r.id for r in rows if r.in_groups] if _wants("groups", CORE_USER, attributes, excluded) else []
    groups = groups_of_users(session=session, caller=caller, user_ids=members)
    return [
        shape(
            render_user(row, groups=groups.get(row.id, []), base_url=caller.base_url),
            UserModel,
            attributes=attributes,
            excluded=excluded,
        )
        for row in rows
    ]


def render_groups(
    *,
    session: Session,
    caller: ScimCaller,
    rows: list[ScimGroup],
    attributes: list[str] | None = None,
    excluded: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Representations of groups; members are only loaded when the response will carry them."""
    members = (
        members_of_groups(session=session, caller=caller, group_pks=[r.pk for r in rows if r.pk is not None])
        if wants_members(attributes, excluded)
        else None
    )
    return [
        shape(
            render_group(
                row,
                members=None if members is None else members.get(row.pk or 0, []),
                base_url=caller.base_url,
            ),
            Group,
            attributes=attributes,
            excluded=excluded,
        )
        for row in rows
    ]


@functools.cache
def _equality_statements(kind: ResourceKind, key: str) -> tuple[Select[Any], Select[Any]]:
    """Page and COUNT(*) for ``<key> eq <value>``, built once: SQLAlchemy then reuses their compiled
    form and cache key, and a request only binds ``partner_id``, ``filter_value``, offset and limit."""
    table = USER_TABLE if kind == "User" else _GROUP_TABLE
    where = (table.c.partner_id == bindparam("partner_id"), equality_predicate(kind, key))
    page = (
        (select(*USER_COLUMNS) if kind == "User" else select(ScimGroup))
        .where(*where)
        .order_by(table.c.pk)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    return page, select(func.count()).select_from(table).where(*where)


def _check_order(order: str, query: ListQuery) -> None:
    if order not in ("ascending", "descending"):
        raise InvalidValue(f"sortOrder must be 'ascending' or 'descending', got {query.sort_order!r}")


def _statements(
    caller: ScimCaller, kind: ResourceKind, query: ListQuery, start: int, count: int
) -> tuple[Select[Any], Select[Any], dict[str, Any]]:
    """The page and COUNT(*) statements of a list request, and their parameters.

    Refusals come in the order a reader meets them: the filter, then sortOrder, then sortBy.
    """
    settings = caller.settings
    order = (query.sort_order or "ascending").lower()
    simple = (
        equality(query.filter, kind=kind, max_length=settings.scim_max_filter_length)
        if query.filter is not None and not query.root and not query.sort_by
        else None
    )
    if simple is not None:
        _check_order(order, query)
        page, counted = _equality_statements(kind, simple.key)
        params = {"partner_id": caller.partner_id, "filter_value": simple.value, "offset": start - 1, "limit": count}
        return page, counted, params
    table = USER_TABLE if kind == "User" else _GROUP_TABLE
    conditions: list[Any] = [table.c.partner_id == caller.partner_id]
    if query.filter is not None:
        conditions.append(
            build_filter(
                query.filter,
                kind=kind,
                partner_id=caller.partner_id,
                max_length=settings.scim_max_filter_length,
                root=query.root,
            )
        )
    _check_order(order, query)
    statement = (select(*USER_COLUMNS) if kind == "User" else select(ScimGroup)).where(*conditions)
    if query.sort_by:
        key = sort_key(query.sort_by, kind=kind)
        statement = statement.order_by(key.desc().nulls_first() if order == "descending" else key.asc().nulls_last())
    page = statement.order_by(table.c.pk).offset(start - 1).limit(count)
    return page, select(func.count()).select_from(table).where(*conditions), {}


def list_resources(*, session: Session, caller: ScimCaller, kind: ResourceKind, query: ListQuery) -> dict[str, Any]:
    """A ListResponse page. Ordering always ends on the primary key, so pages are stable (Okta pages by index)."""
    settings = caller.settings
    start = max(query.start_index, 1)
    count = settings.scim_default_count if query.count is None else query.count
    count = min(max(count, 0), settings.scim_max_results)
    statement, count_statement, params = _statements(caller, kind, query, start, count)

    def page() -> list[Any]:
        if kind == "User":
            return [StoredUser.from_row(r) for r in session.connection().execute(statement, params)]
        return list(session.scalars(statement, params).all())

    def counted() -> int:
        return int(session.connection().execute(count_statement, params).scalar_one())

    if start == 1 and count:
        # The first page, fetched first: when it is not full it is the whole result, and the
        # COUNT(*) (a second index walk, for an `eq` filter a second round trip) is not needed.
        rows = page()
        total = len(rows) if len(rows) < count else counted()
    else:
        # Past the last result there is nothing to fetch; skipping the query also keeps a startIndex
        # beyond 64 bits (valid JSON, valid query text) from reaching the driver's OFFSET as an overflow.
        total = counted()
        rows = page() if count and start <= total else []
    if kind == "User":
        resources = render_users(
            session=session,
            caller=caller,
            rows=rows,
            attributes=query.attributes,
            excluded=query.excluded_attributes,
        )
    else:
        resources = render_groups(
            session=session,
            caller=caller,
            rows=rows,
            attributes=query.attributes,
            excluded=query.excluded_attributes,
        )
    body: dict[str, Any] = {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
    }
    if resources:
        body["Resources"] = resources
    return body
