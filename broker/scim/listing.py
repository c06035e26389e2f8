"""RFC 7644 §3.4.2 list and search: filter, sort, paginate, select attributes, all in SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim2_models import Group, ListResponse
from sqlalchemy import func
from sqlmodel import Session, col, select

from broker.errors import InvalidValue
from broker.scim.auth import ScimCaller
from broker.scim.filters import ResourceKind, build_filter, sort_key
from broker.scim.groups import groups_of_users, members_of_groups
from broker.scim.models import ScimGroup, ScimUser
from broker.scim.resources import UserModel, render_group, render_user, shape

__all__ = ["ListQuery", "list_resources", "render_groups", "render_users", "wants_members"]

LIST_RESPONSE = str(ListResponse.__schema__)


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


def wants_members(attributes: list[str] | None, excluded: list[str] | None) -> bool:
    """Whether a group response carries members (Entra always sends excludedAttributes=members)."""

    def names(items: list[str] | None) -> set[str]:
        return {i.strip().lower().removeprefix("urn:ietf:params:scim:schemas:core:2.0:group:") for i in items or []}

    if attributes:
        return any(n == "members" or n.startswith("members.") for n in names(attributes))
    return "members" not in names(excluded)


def render_users(
    *,
    session: Session,
    caller: ScimCaller,
    rows: list[ScimUser],
    attributes: list[str] | None = None,
    excluded: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Full or attribute-selected representations of users, their groups loaded in one query."""
    groups = groups_of_users(session=session, caller=caller, user_ids=[r.id for r in rows])
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


def list_resources(*, session: Session, caller: ScimCaller, kind: ResourceKind, query: ListQuery) -> dict[str, Any]:
    """A ListResponse page. Ordering always ends on the primary key, so pages are stable (Okta pages by index)."""
    settings = caller.settings
    table: type[ScimUser] | type[ScimGroup] = ScimUser if kind == "User" else ScimGroup
    conditions: list[Any] = [table.partner_id == caller.partner_id]
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
    order = (query.sort_order or "ascending").lower()
    if order not in ("ascending", "descending"):
        raise InvalidValue(f"sortOrder must be 'ascending' or 'descending', got {query.sort_order!r}")
    start = max(query.start_index, 1)
    count = settings.scim_default_count if query.count is None else query.count
    count = min(max(count, 0), settings.scim_max_results)

    total = session.exec(select(func.count()).select_from(table).where(*conditions)).one()
    statement = select(table).where(*conditions)
    if query.sort_by:
        key = sort_key(query.sort_by, kind=kind)
        statement = statement.order_by(key.desc().nulls_first() if order == "descending" else key.asc().nulls_last())
    statement = statement.order_by(col(table.pk)).offset(start - 1).limit(count)
    # Past the last result there is nothing to fetch; skipping the query also keeps a startIndex
    # beyond 64 bits (valid JSON, valid query text) from reaching the driver's OFFSET as an overflow.
    rows = list(session.exec(statement).all()) if count and start <= total else []
    if kind == "User":
        resources = render_users(
            session=session,
            caller=caller,
            rows=rows,
            attributes=query.attributes,  # type: ignore[arg-type]
            excluded=query.excluded_attributes,
        )
    else:
        resources = render_groups(
            session=session,
            caller=caller,
            rows=rows,
            attributes=query.attributes,  # type: ignore[arg-type]
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
