"""RFC 7644 §3.3-§3.6 for Groups. Memberships are rows, changed in SQL, so an Entra member PATCH on
a large group costs one row, not the whole member list; every membership change becomes a
``groups_changed`` event for the member. The caller commits; nothing here commits."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from scim2_models import Context, Group, PatchOp, SCIMException
from sqlalchemy import ColumnElement, and_, bindparam
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.errors import Conflict, InvalidPath, InvalidValue, Mutability, NotFound
from broker.lifecycle.events import EventKind, NewEvent, record_change
from broker.scim.auth import ScimCaller
from broker.scim.common import changed_attributes, check_body_id, check_if_match, require_object
from broker.scim.filters import member_filter
from broker.scim.models import GroupMember, ScimGroup, ScimUser
from broker.scim.normalize import CORE_GROUP, normalize_patch, normalize_resource
from broker.scim.resources import POLICY, as_broker_error, fold, group_columns, group_document, validate_group
from broker.types import utcnow

__all__ = [
    "create_group",
    "delete_group",
    "get_group",
    "groups_of_users",
    "members_of_groups",
    "patch_group",
    "replace_group",
]

_MEMBERS_PATH = re.compile(
    r"^\s*(?:urn:ietf:params:scim:schemas:core:2\.0:group:)?members\s*(?:\[(?P<filter>.*)\])?(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
Change = tuple[list[tuple[str, str]], list[tuple[str, str]]]  # (added, removed) as (member id, type)


def get_group(*, session: Session, caller: ScimCaller, group_id: str, for_update: bool = False) -> ScimGroup:
    """The partner's group with this id. Another partner's id is NotFound, exactly like a missing one.

    ``for_update`` locks the group row until the transaction ends: every write to a group (its
    attributes or its members) queues behind the previous one instead of racing it.
    """
    if "\x00" in group_id:  # no id holds U+0000, and PostgreSQL cannot even compare with it (%00 in a URL)
        raise NotFound(f"Group '{group_id}' not found")
    query = select(ScimGroup).where(ScimGroup.partner_id == caller.partner_id, ScimGroup.id == group_id)
    row = session.exec(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"Group '{group_id}' not found")
    return row


def members_of_groups(*, session: Session, caller: ScimCaller, group_pks: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Members of several groups in two queries, for rendering; ``display`` is the one the client sent,
    else the member's current displayName (else userName)."""
    result: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not group_pks:
        return result
    users = session.exec(
        select(GroupMember.group_pk, ScimUser.id, GroupMember.display, ScimUser.display_name, ScimUser.user_name)
        .join(
            ScimUser,
            and_(ScimUser.id == GroupMember.member_id, ScimUser.partner_id == GroupMember.partner_id),
        )
        .where(GroupMember.partner_id == caller.partner_id, col(GroupMember.group_pk).in_(group_pks))
        .order_by(col(GroupMember.pk))
    ).all()
    for group_pk, member_id, sent, display_name, user_name in users:
        result[group_pk].append({"value": member_id, "type": "User", "display": sent or display_name or user_name})
    nested = session.exec(
        select(GroupMember.group_pk, ScimGroup.id, GroupMember.display, ScimGroup.display_name)
        .join(
            ScimGroup,
            and_(ScimGroup.id == GroupMember.member_id, ScimGroup.partner_id == GroupMember.partner_id),
        )
        .where(GroupMember.partner_id == caller.partner_id, col(GroupMember.group_pk).in_(group_pks))
        .order_by(col(GroupMember.pk))
    ).all()
    for group_pk, member_id, sent, display_name in nested:
        result[group_pk].append({"value": member_id, "type": "Group", "display": sent or display_name})
    return result


_GROUP_TABLE = ScimGroup.__table__  # type: ignore[attr-defined]
_MEMBER_TABLE = GroupMember.__table__  # type: ignore[attr-defined]
_GROUPS_OF = (
    select(_MEMBER_TABLE.c.member_id, _GROUP_TABLE.c.id, _GROUP_TABLE.c.display_name)
    .join(_GROUP_TABLE, _GROUP_TABLE.c.pk == _MEMBER_TABLE.c.group_pk)
    .where(_MEMBER_TABLE.c.partner_id == bindparam("partner_id"))
    .order_by(_GROUP_TABLE.c.display_name_ci)
)
_GROUPS_OF_USER = _GROUPS_OF.where(_MEMBER_TABLE.c.member_id == bindparam("user_id"))
_GROUPS_OF_USERS = _GROUPS_OF.where(_MEMBER_TABLE.c.member_id.in_(bindparam("user_ids", expanding=True)))
"""Built once (Core statements on the session's connection): one runs on every user response, the
single-user form for writes and reads of one user, which skips rendering an expanding IN."""


def groups_of_users(*, session: Session, caller: ScimCaller, user_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Direct group memberships of several users in one query, for the readOnly ``User.groups``."""
    result: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not user_ids:
        return result
    params: dict[str, Any]
    if len(user_ids) == 1:
        statement, params = _GROUPS_OF_USER, {"partner_id": caller.partner_id, "user_id": user_ids[0]}
    else:
        statement, params = _GROUPS_OF_USERS, {"partner_id": caller.partner_id, "user_ids": user_ids}
    for member_id, group_id, display_name in session.connection().execute(statement, params):
        result[member_id].append({"value": group_id, "display": display_name, "type": "direct"})
    return result


def _member_values(items: Any, where: str) -> dict[str, str | None]:
    """Member id -> the ``display`` the client sent (kept as sent), in the order given."""
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise InvalidValue(f'{where}: members must be a list of {{"value": id}} objects')
    values: dict[str, str | None] = {}
    for item in items:
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, str) or not value:
            raise InvalidValue(f"{where}: every member needs a string 'value' (the member's id)")
        display = next((v for k, v in item.items() if k.lower() == "display"), None)
        values[value] = display if isinstance(display, str) else None
    return values


def _resolve(session: Session, caller: ScimCaller, group: ScimGroup, ids: list[str]) -> dict[str, str]:
    """Member id -> "User" | "Group"; an id that is neither in this partner is refused by name."""
    if not ids:
        return {}
    found = {
        i: "User"
        for i in session.exec(
            select(ScimUser.id).where(ScimUser.partner_id == caller.partner_id, col(ScimUser.id).in_(ids))
        ).all()
    }
    found.update(
        {
            i: "Group"
            for i in session.exec(
                select(ScimGroup.id).where(ScimGroup.partner_id == caller.partner_id, col(ScimGroup.id).in_(ids))
            ).all()
        }
    )
    if group.id in ids:
        raise InvalidValue(f"group '{group.id}' cannot be a member of itself")
    missing = [i for i in ids if i not in found]
    if missing:
        raise InvalidValue(f"member(s) not found among this partner's Users and Groups: {', '.join(missing[:5])}")
    return found


def _current(session: Session, group: ScimGroup) -> dict[str, str]:
    rows = session.exec(
        select(GroupMember.member_id, GroupMember.member_type).where(GroupMember.group_pk == group.pk)
    ).all()
    return dict(rows)


def _add(session: Session, caller: ScimCaller, group: ScimGroup, members: dict[str, str | None]) -> Change:
    """Add members that are not there yet; a repeated add only refreshes the ``display`` sent."""
    existing = {
        row.member_id: row
        for row in session.exec(
            select(GroupMember).where(GroupMember.group_pk == group.pk, col(GroupMember.member_id).in_(list(members)))
        ).all()
    }
    for member_id, row in existing.items():
        if members[member_id] is not None and row.display != members[member_id]:
            row.display = members[member_id]
            session.add(row)
    new = [i for i in members if i not in existing]
    types = _resolve(session, caller, group, new)
    assert group.pk is not None
    for member_id in new:
        session.add(
            GroupMember(
                partner_id=caller.partner_id,
                group_pk=group.pk,
                member_id=member_id,
                member_type=types[member_id],
                display=members[member_id],
            )
        )
    return [(i, types[i]) for i in new], []


def _remove_where(session: Session, group: ScimGroup, predicate: ColumnElement[bool] | None) -> Change:
    query = select(GroupMember).where(GroupMember.group_pk == group.pk)
    if predicate is not None:
        query = query.where(predicate)
    rows = session.exec(query).all()
    for row in rows:
        session.delete(row)
    return [], [(r.member_id, r.member_type) for r in rows]


def _remove_ids(session: Session, group: ScimGroup, ids: list[str]) -> Change:
    return _remove_where(session, group, col(GroupMember.member_id).in_(ids))


def _set(session: Session, caller: ScimCaller, group: ScimGroup, members: dict[str, str | None]) -> Change:
    current = _current(session, group)
    _, removed = _remove_ids(session, group, [i for i in current if i not in members])
    session.flush()
    added, _ = _add(session, caller, group, members)
    return added, removed


def _merge(total: Change, change: Change) -> None:
    total[0].extend(change[0])
    total[1].extend(change[1])


def _member_operation(
    session: Session, caller: ScimCaller, group: ScimGroup, op: str, path: str | None, value: Any
) -> Change:
    """Apply one PATCH operation that targets ``members``."""
    where = f"{op} {path or 'members'}"
    match = _MEMBERS_PATH.match(path) if path else None
    filter_text = match.group("filter") if match else None
    if match and match.group("rest").strip():
        if re.fullmatch(r"\s*\.\s*(value|type|display|\$ref)\s*", match.group("rest"), re.IGNORECASE):
            # RFC 7643 §4.2: value, $ref and type are immutable, so the path is well formed but the
            # change is refused: mutability, not invalidPath. (display changes by re-adding the member.)
            raise Mutability(f"'{path}': member sub-attributes are immutable; add or remove the member")
        raise InvalidPath(f"'{path}': not a path to members or to one of their sub-attributes")
    if op == "add":
        if filter_text is not None:
            raise InvalidPath(f"'{path}': add does not take a value filter")
        return _add(session, caller, group, _member_values(value, where))
    if op == "replace":
        if filter_text is None:
            return _set(session, caller, group, _member_values(value, where))
        total: Change = ([], [])
        _merge(total, _remove_where(session, group, member_filter(filter_text)))
        session.flush()
        _merge(total, _add(session, caller, group, _member_values(value, where)))
        return total
    # remove
    if filter_text is not None:
        return _remove_where(session, group, member_filter(filter_text))
    if value is not None:  # Entra: remove path=members with a value list removes only those members
        return _remove_ids(session, group, list(_member_values(value, where)))
    return _remove_where(session, group, None)


def _membership_events(caller: ScimCaller, group: ScimGroup, change: Change) -> list[NewEvent]:
    """One ``groups_changed`` event per member whose membership of ``group`` changed."""
    added, removed = change
    added_ids, removed_ids = {i for i, _ in added}, {i for i, _ in removed}
    types = dict(added) | dict(removed)
    return [
        NewEvent(
            caller.partner_id,
            EventKind.GROUPS_CHANGED,
            "user" if types[member_id] == "User" else "group",
            member_id,
            {"added": [group.id]} if member_id in added_ids else {"removed": [group.id]},
        )
        for member_id in sorted(added_ids ^ removed_ids)
    ]


def _ensure_unique(session: Session, caller: ScimCaller, display_name: str, exclude_pk: int | None) -> None:
    existing = session.exec(
        select(ScimGroup.pk).where(
            ScimGroup.partner_id == caller.partner_id, ScimGroup.display_name_ci == fold(display_name)
        )
    ).first()
    if existing is not None and existing != exclude_pk:
        raise Conflict(f"displayName '{display_name}' is already taken by another group of this partner")


def _flush(session: Session, display_name: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"displayName '{display_name}' is already taken by another group of this partner") from exc


def _audit_and_events(
    session: Session,
    caller: ScimCaller,
    group: ScimGroup,
    *,
    action: str,
    before: dict[str, Any] | None,
    change: Change,
    detail: dict[str, Any],
    kind: EventKind | None,
) -> None:
    added, removed = change
    changed = changed_attributes(before or {}, group.attributes) if before is not None else []
    events = []
    if kind is EventKind.GROUP_CREATED or (kind is EventKind.GROUP_UPDATED and changed):
        events.append(
            NewEvent(
                caller.partner_id,
                kind,
                "group",
                group.id,
                {"attributes": changed} if changed else {"displayName": group.display_name},
            )
        )
    record_change(
        session,
        actor=caller.actor,
        action=action,
        partner_id=caller.partner_id,
        resource_type="Group",
        resource_id=group.id,
        before=before,
        after=group.attributes,
        detail={
            **detail,
            **({"changed": changed} if changed else {}),
            **({"members_added": [i for i, _ in added]} if added else {}),
            **({"members_removed": [i for i, _ in removed]} if removed else {}),
        },
        events=events + _membership_events(caller, group, change),
    )


def create_group(*, session: Session, caller: ScimCaller, payload: Any) -> ScimGroup:
    """POST /Groups, members included (Okta AIW pushes them in the POST)."""
    body, dropped = normalize_resource(require_object(payload), core=CORE_GROUP, base_url=caller.base_url)
    model = validate_group(body, ctx=Context.RESOURCE_CREATION_REQUEST)
    doc = group_document(model)
    _ensure_unique(session, caller, doc["displayName"], None)
    now = utcnow()
    group = ScimGroup(
        id=str(uuid.uuid4()),
        partner_id=caller.partner_id,
        attributes=doc,
        created_at=now,
        updated_at=now,
        **group_columns(doc),
    )
    session.add(group)
    _flush(session, doc["displayName"])
    change = _add(session, caller, group, {m.value: m.display for m in model.members or [] if m.value})
    detail = {"ignored_schemas": dropped} if dropped else {}
    _audit_and_events(
        session,
        caller,
        group,
        action="scim.group.created",
        before=None,
        change=change,
        detail=detail,
        kind=EventKind.GROUP_CREATED,
    )
    return group


def _store(
    session: Session, caller: ScimCaller, group: ScimGroup, doc: dict[str, Any], membership_changed: bool
) -> bool:
    if doc == group.attributes and not membership_changed:
        return False
    if doc != group.attributes:
        if fold(doc["displayName"]) != group.display_name_ci:
            _ensure_unique(session, caller, doc["displayName"], group.pk)
        for key, value in group_columns(doc).items():
            setattr(group, key, value)
        group.attributes = doc
    group.version += 1
    group.updated_at = utcnow()
    session.add(group)
    _flush(session, doc["displayName"])
    return True


def replace_group(
    *, session: Session, caller: ScimCaller, group_id: str, payload: Any, if_match: str | None
) -> ScimGroup:
    """PUT /Groups/{id}: the members list replaces the membership (Okta AIW, PingFederate)."""
    group = get_group(session=session, caller=caller, group_id=group_id, for_update=True)
    check_if_match(if_match, group.version)
    body, dropped = normalize_resource(require_object(payload), core=CORE_GROUP, base_url=caller.base_url)
    check_body_id(body, group.id)
    model = validate_group(body, ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    doc = group_document(model)
    before = group.attributes
    change = _set(session, caller, group, {m.value: m.display for m in model.members or [] if m.value})
    if _store(session, caller, group, doc, bool(change[0] or change[1])):
        detail = {"ignored_schemas": dropped} if dropped else {}
        _audit_and_events(
            session,
            caller,
            group,
            action="scim.group.replaced",
            before=before,
            change=change,
            detail=detail,
            kind=EventKind.GROUP_UPDATED,
        )
    return group


def _split(operations: Iterable[Any]) -> tuple[list[tuple[str, str | None, Any]], list[dict[str, Any]]]:
    """Separate member operations (applied in SQL) from attribute operations (applied by scim2-models)."""
    member_ops: list[tuple[str, str | None, Any]] = []
    attribute_ops: list[dict[str, Any]] = []
    for raw in operations:
        op = str(raw.get("op", "")).lower()
        path = raw.get("path")
        value = raw.get("value")
        if path is None and isinstance(value, dict):
            rest = {k: v for k, v in value.items() if k.lower() != "members"}
            members = [v for k, v in value.items() if k.lower() == "members"]
            if members:
                member_ops.append((op, None, members[0]))
            if rest:
                attribute_ops.append({"op": op, "value": rest})
        elif isinstance(path, str) and _MEMBERS_PATH.match(path):
            member_ops.append((op, path, value))
        else:
            attribute_ops.append({k: v for k, v in raw.items()})
    return member_ops, attribute_ops


def patch_group(
    *, session: Session, caller: ScimCaller, group_id: str, payload: Any, if_match: str | None
) -> ScimGroup:
    """PATCH /Groups/{id} (RFC 7644 §3.5.2): validated whole by scim2-models, applied in order, atomic."""
    group = get_group(session=session, caller=caller, group_id=group_id, for_update=True)
    check_if_match(if_match, group.version)
    body = normalize_patch(require_object(payload), base_url=caller.base_url)
    try:
        PatchOp[Group].model_validate(body, scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=POLICY)  # type: ignore[misc]
    except (ValidationError, SCIMException) as exc:
        raise as_broker_error(exc) from exc
    member_ops, attribute_ops = _split(body["Operations"])
    change: Change = ([], [])
    for op, path, value in member_ops:
        _merge(change, _member_operation(session, caller, group, op, path, value))
        session.flush()
    doc = group.attributes
    if attribute_ops:
        try:
            current = Group.model_validate({**group.attributes, "id": group.id}, scim_policy=POLICY)
            PatchOp[Group].model_validate(  # type: ignore[misc]
                {"schemas": body.get("schemas"), "Operations": attribute_ops},
                scim_ctx=Context.RESOURCE_PATCH_REQUEST,
                scim_policy=POLICY,
            ).patch(current, scim_policy=POLICY)
            if current.id != group.id:
                raise Mutability(f"id is readOnly: cannot change it to '{current.id}'")
            doc = group_document(
                Group.model_validate(current.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE), scim_policy=POLICY)
            )
        except (ValidationError, SCIMException) as exc:
            raise as_broker_error(exc) from exc
    added = {i for i, _ in change[0]}
    removed = {i for i, _ in change[1]}
    net = ([c for c in change[0] if c[0] not in removed], [c for c in change[1] if c[0] not in added])
    before = group.attributes
    if _store(session, caller, group, doc, bool(net[0] or net[1])):
        _audit_and_events(
            session,
            caller,
            group,
            action="scim.group.patched",
            before=before,
            change=net,
            detail={},
            kind=EventKind.GROUP_UPDATED,
        )
    return group


def delete_group(*, session: Session, caller: ScimCaller, group_id: str, if_match: str | None) -> None:
    """DELETE /Groups/{id}: every member loses the group (a groups_changed event each)."""
    group = get_group(session=session, caller=caller, group_id=group_id, for_update=True)
    check_if_match(if_match, group.version)
    change = _remove_where(session, group, None)
    # the group may itself be a member of other groups
    session.execute(
        sql_delete(GroupMember).where(
            GroupMember.partner_id == caller.partner_id,
            GroupMember.member_id == group.id,  # type: ignore[arg-type]
        )
    )
    session.delete(group)
    record_change(
        session,
        actor=caller.actor,
        action="scim.group.deleted",
        partner_id=caller.partner_id,
        resource_type="Group",
        resource_id=group.id,
        before=group.attributes,
        detail={"members_removed": [i for i, _ in change[1]]},
        events=[
            NewEvent(
                caller.partner_id, EventKind.GROUP_DELETED, "group", group.id, {"displayName": group.display_name}
            ),
            *_membership_events(caller, group, change),
        ],
    )
