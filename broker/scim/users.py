"""RFC 7644 §3.3-§3.6 for Users: create, read, replace, patch, delete, each with its audit record and
lifecycle events in the caller's transaction. The caller commits; nothing here commits."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from scim2_models import Context
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.audit.log import AuditItem, append_audits
from broker.errors import Conflict, NotFound, PreconditionFailed
from broker.lifecycle.events import EventKind, NewEvent, record_change, record_events
from broker.scim.auth import ScimCaller
from broker.scim.common import changed_attributes, check_body_id, check_domains, check_if_match, require_object
from broker.scim.models import GroupMember, ScimValue
from broker.scim.normalize import CORE_USER, normalize_patch, normalize_resource
from broker.scim.patching import patch_user_document
from broker.scim.resources import (
    UserModel,
    fold,
    user_columns,
    user_document,
    user_values,
    validate_user,
)
from broker.scim.stored import USER_COLUMNS, USER_TABLE, StoredUser
from broker.types import utcnow

__all__ = [
    "Candidate",
    "NewUser",
    "admit",
    "candidate",
    "create_user",
    "delete_user",
    "get_user",
    "insert_users",
    "patch_user",
    "replace_user",
    "taken_user_names",
]

_VALUE_TABLE = ScimValue.__table__  # type: ignore[attr-defined]
_MEMBER_TABLE = GroupMember.__table__  # type: ignore[attr-defined]
# Core statements built once: per call only parameters are bound. Users are never ORM objects here
# (see broker.scim.stored), so nothing is tracked, flushed or expired.
_USER = select(*USER_COLUMNS).where(
    USER_TABLE.c.partner_id == bindparam("partner_id"), USER_TABLE.c.id == bindparam("id")
)
_USER_FOR_UPDATE = _USER.with_for_update()
_USER_NAME_TAKEN = select(USER_TABLE.c.pk).where(
    USER_TABLE.c.partner_id == bindparam("partner_id"), USER_TABLE.c.user_name_ci == bindparam("user_name_ci")
)
_USER_NAMES_TAKEN = select(USER_TABLE.c.user_name_ci).where(
    USER_TABLE.c.partner_id == bindparam("partner_id"),
    USER_TABLE.c.user_name_ci.in_(bindparam("names", expanding=True)),
)
_INSERT_USER = insert(USER_TABLE).returning(USER_TABLE.c.pk)
_INSERT_USERS = insert(USER_TABLE)
_PKS = select(USER_TABLE.c.id, USER_TABLE.c.pk).where(
    USER_TABLE.c.partner_id == bindparam("partner_id"), USER_TABLE.c.id.in_(bindparam("ids", expanding=True))
)
_UPDATE_USER = update(USER_TABLE).where(
    USER_TABLE.c.pk == bindparam("_pk"), USER_TABLE.c.version == bindparam("_version")
)
_DELETE_USER = sql_delete(USER_TABLE).where(USER_TABLE.c.pk == bindparam("_pk"))
_INSERT_VALUES = insert(_VALUE_TABLE)
_DELETE_VALUES = sql_delete(_VALUE_TABLE).where(_VALUE_TABLE.c.user_pk == bindparam("_pk"))
_DELETE_MEMBERSHIPS = sql_delete(_MEMBER_TABLE).where(
    _MEMBER_TABLE.c.partner_id == bindparam("partner_id"), _MEMBER_TABLE.c.member_id == bindparam("member_id")
)


def get_user(*, session: Session, caller: ScimCaller, user_id: str, for_update: bool = False) -> StoredUser:
    """The partner's user with this id. Another partner's id is NotFound, exactly like a missing one.

    ``for_update`` locks the row until the transaction ends, so concurrent writes to one user queue
    instead of losing each other's changes (PostgreSQL; SQLite writers are already serialized).
    """
    if "\x00" in user_id:  # no id holds U+0000, and PostgreSQL cannot even compare with it (%00 in a URL)
        raise NotFound(f"User '{user_id}' not found")
    statement = _USER_FOR_UPDATE if for_update else _USER
    row = session.connection().execute(statement, {"partner_id": caller.partner_id, "id": user_id}).first()
    if row is None:
        raise NotFound(f"User '{user_id}' not found")
    return StoredUser.from_row(row)


def _ensure_unique(session: Session, caller: ScimCaller, user_name: str, exclude_pk: int | None) -> None:
    params = {"partner_id": caller.partner_id, "user_name_ci": fold(user_name)}
    existing = session.connection().execute(_USER_NAME_TAKEN, params).scalar()
    if existing is not None and existing != exclude_pk:
        raise Conflict(f"userName '{user_name}' is already taken by another user of this partner")


def _rewrite_values(session: Session, caller: ScimCaller, pk: int, before: dict[str, Any], doc: dict[str, Any]) -> None:
    """Rebuild the user's multi-valued index rows, unless they would come out the same (a PATCH of
    ``title`` leaves emails alone, and then costs no DELETE and no INSERT)."""
    values = user_values(doc)
    if user_values(before) == values:
        return
    connection = session.connection()
    connection.execute(_DELETE_VALUES, {"_pk": pk})
    if values:
        connection.execute(_INSERT_VALUES, [{"partner_id": caller.partner_id, "user_pk": pk, **v} for v in values])


def _ignored(model: UserModel, dropped_schemas: list[str]) -> dict[str, Any]:
    """Audit detail: the attributes and schemas a body carried that we do not keep."""
    detail: dict[str, Any] = {}
    if model.unknown_attributes:
        detail["ignored_attributes"] = sorted(model.unknown_attributes)
    if dropped_schemas:
        detail["ignored_schemas"] = dropped_schemas
    return detail


@dataclass(frozen=True)
class Candidate:
    """A POST /Users body validated into the document we would store; its userName not yet known free."""

    doc: dict[str, Any]
    ignored: dict[str, Any]  #: see _ignored


def candidate(*, caller: ScimCaller, payload: Any) -> Candidate:
    """First step of a create, with no database: the body normalized, validated and in stored form."""
    body, dropped = normalize_resource(require_object(payload), core=CORE_USER, base_url=caller.base_url)
    model = validate_user(body, ctx=Context.RESOURCE_CREATION_REQUEST)
    doc = user_document(model, base_url=caller.base_url)
    doc.setdefault("active", True)  # the server's default at creation (RFC 7643 §2.5), made explicit
    return Candidate(doc, _ignored(model, dropped))


@dataclass(frozen=True)
class NewUser:
    """A candidate whose userName is free and whose addresses and values the partner may store."""

    doc: dict[str, Any]
    detail: dict[str, Any]
    columns: dict[str, Any]


def admit(*, caller: ScimCaller, candidate: Candidate) -> NewUser:
    """Last step before writing: the partner's domains (refused, or warned about) and column sizes."""
    detail = dict(candidate.ignored)
    warnings = check_domains(caller, None, candidate.doc)
    if warnings:
        detail["domain_warnings"] = warnings
    return NewUser(candidate.doc, detail, user_columns(candidate.doc))


def taken_user_names(*, session: Session, caller: ScimCaller, names: Collection[str]) -> set[str]:
    """Which of these folded userNames the partner's users already hold, in one query."""
    if not names:
        return set()
    params = {"partner_id": caller.partner_id, "names": list(names)}
    return set(session.connection().execute(_USER_NAMES_TAKEN, params).scalars())


def insert_users(*, session: Session, caller: ScimCaller, users: Sequence[NewUser]) -> list[StoredUser]:
    """Write admitted users with their value rows, audit records and joiner events (a user created
    active is a joiner). Users and value rows go in one multi-row INSERT each, however many users.

    A userName taken meanwhile by a concurrent writer raises IntegrityError; the caller decides.
    """
    if not users:
        return []
    connection = session.connection()
    rows = []
    for user in users:
        now = utcnow()
        rows.append(
            {
                **user.columns,
                "id": str(uuid.uuid4()),
                "partner_id": caller.partner_id,
                "version": 1,
                "created_at": now,
                "updated_at": now,
                "joined_at": now if user.columns["active"] else None,
                "attributes": user.doc,
            }
        )
    pks = _insert(connection, caller.partner_id, rows)
    stored = [StoredUser.from_values({**row, "pk": pk}) for row, pk in zip(rows, pks, strict=True)]
    values = [
        {"partner_id": caller.partner_id, "user_pk": row.pk, **value}
        for row in stored
        for value in user_values(row.attributes)
    ]
    if values:
        connection.execute(_INSERT_VALUES, values)
    audit_ids = append_audits(
        session,
        actor=caller.actor,
        items=[
            AuditItem("scim.user.created", caller.partner_id, "User", row.id, user.detail, after=row.attributes)
            for row, user in zip(stored, users, strict=True)
        ],
    )
    record_events(
        session,
        [
            NewEvent(caller.partner_id, EventKind.JOINED, "user", row.id, audit_id=audit_id)
            for row, audit_id in zip(stored, audit_ids, strict=True)
            if row.active
        ],
    )
    return stored


def _insert(connection: Connection, partner_id: str, rows: list[dict[str, Any]]) -> list[int]:
    """The pks of freshly inserted user rows, in order.

    One row: INSERT ... RETURNING. Many: a plain executemany (psycopg pipelines it; a multi-row
    INSERT ... RETURNING of a thousand users is a statement of 34,000 parameters that psycopg
    re-parses every time), then their pks by id in one query.
    """
    if len(rows) == 1:
        return [connection.execute(_INSERT_USER, rows[0]).scalar_one()]
    connection.execute(_INSERT_USERS, rows)
    ids = [row["id"] for row in rows]
    pks: dict[str, int] = dict(connection.execute(_PKS, {"partner_id": partner_id, "ids": ids}).all())
    return [pks[i] for i in ids]


def create_user(*, session: Session, caller: ScimCaller, payload: Any) -> StoredUser:
    """POST /Users. A user created active is a joiner."""
    new = candidate(caller=caller, payload=payload)
    _ensure_unique(session, caller, new.doc["userName"], None)
    user = admit(caller=caller, candidate=new)
    try:
        [row] = insert_users(session=session, caller=caller, users=[user])
    except IntegrityError as exc:  # a concurrent writer won the userName race
        raise Conflict(f"userName '{user.doc['userName']}' is already taken by another user of this partner") from exc
    return row


def _apply(
    session: Session,
    caller: ScimCaller,
    row: StoredUser,
    doc: dict[str, Any],
    action: str,
    detail: dict[str, Any],
) -> StoredUser:
    """Store a new document for an existing user, with audit and JML events; a no-op changes nothing."""
    before = row.attributes
    if doc == before:
        return row
    if fold(doc["userName"]) != row.user_name_ci:
        _ensure_unique(session, caller, doc["userName"], row.pk)
    warnings = check_domains(caller, before, doc)
    if warnings:
        detail["domain_warnings"] = warnings
    was_active = row.active
    now = utcnow()
    columns = user_columns(doc, active_if_unassigned=row.active)
    values: dict[str, Any] = {**columns, "attributes": doc, "version": row.version + 1, "updated_at": now}
    rejoin = False
    if columns["active"] and not was_active:
        rejoin = row.joined_at is not None
        values["joined_at"] = row.joined_at or now
    try:
        updated = session.connection().execute(_UPDATE_USER, {**values, "_pk": row.pk, "_version": row.version})
    except IntegrityError as exc:  # a concurrent writer won the userName race
        raise Conflict(f"userName '{doc['userName']}' is already taken by another user of this partner") from exc
    if updated.rowcount != 1:  # another request changed this user after we read it: refuse rather than lose it
        raise PreconditionFailed(f"User '{row.id}' changed concurrently; retry the request")
    row = dataclasses.replace(
        row,
        version=values["version"],
        updated_at=now,
        joined_at=values.get("joined_at", row.joined_at),
        active=columns["active"],
        user_name_ci=columns["user_name_ci"],
        attributes=doc,
    )
    _rewrite_values(session, caller, row.pk, before, doc)
    changed = changed_attributes(before, doc)
    events: list[tuple[EventKind, dict[str, Any] | None]] = []
    if was_active and not row.active:
        events.append((EventKind.LEFT, {"cause": "deactivated"}))
    elif row.active and not was_active:
        events.append((EventKind.REJOINED if rejoin else EventKind.JOINED, None))
    attributes = [name for name in changed if name != "active"]
    if attributes:
        events.append((EventKind.UPDATED, {"attributes": attributes}))
    record_change(
        session,
        actor=caller.actor,
        action=action,
        partner_id=caller.partner_id,
        resource_type="User",
        resource_id=row.id,
        before=before,
        after=doc,
        detail={"changed": changed, **detail},
        events=[NewEvent(caller.partner_id, kind, "user", row.id, extra) for kind, extra in events],
    )
    return row


def replace_user(
    *, session: Session, caller: ScimCaller, user_id: str, payload: Any, if_match: str | None
) -> StoredUser:
    """PUT /Users/{id}: full replacement of readWrite attributes (Okta's GET-then-PUT, AIW deactivation)."""
    row = get_user(session=session, caller=caller, user_id=user_id, for_update=True)
    check_if_match(if_match, row.version)
    body, dropped = normalize_resource(require_object(payload), core=CORE_USER, base_url=caller.base_url)
    check_body_id(body, row.id)
    model = validate_user(body, ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    doc = user_document(model, base_url=caller.base_url)
    # A PUT that omits `active` (OneLogin's template never sends it) gets the current state as the
    # server's default (RFC 7643 §2.5): a leaver is never reactivated by omission. Only an explicit
    # PATCH `remove active` leaves it unassigned (see user_columns).
    doc.setdefault("active", row.active)
    return _apply(session, caller, row, doc, "scim.user.replaced", _ignored(model, dropped))


def patch_user(*, session: Session, caller: ScimCaller, user_id: str, payload: Any, if_match: str | None) -> StoredUser:
    """PATCH /Users/{id} (RFC 7644 §3.5.2): operations in order, all or nothing."""
    row = get_user(session=session, caller=caller, user_id=user_id, for_update=True)
    check_if_match(if_match, row.version)
    body = normalize_patch(require_object(payload), base_url=caller.base_url)
    doc = patch_user_document(row.attributes, row.id, body, base_url=caller.base_url)
    return _apply(session, caller, row, doc, "scim.user.patched", {})


def delete_user(*, session: Session, caller: ScimCaller, user_id: str, if_match: str | None) -> None:
    """DELETE /Users/{id}: a leaver (cause "deleted"), memberships dropped, the id then answers 404."""
    row = get_user(session=session, caller=caller, user_id=user_id, for_update=True)
    check_if_match(if_match, row.version)
    connection = session.connection()
    memberships = connection.execute(
        _DELETE_MEMBERSHIPS, {"partner_id": caller.partner_id, "member_id": row.id}
    ).rowcount
    connection.execute(_DELETE_VALUES, {"_pk": row.pk})
    connection.execute(_DELETE_USER, {"_pk": row.pk})
    record_change(
        session,
        actor=caller.actor,
        action="scim.user.deleted",
        partner_id=caller.partner_id,
        resource_type="User",
        resource_id=row.id,
        before=row.attributes,
        detail={"was_active": row.active, "memberships_removed": memberships},
        events=[
            NewEvent(caller.partner_id, EventKind.LEFT, "user", row.id, {"cause": "deleted", "was_active": row.active})
        ],
    )
