"""RFC 7644 §3.3-§3.6 for Users: create, read, replace, patch, delete, each with its audit record and
lifecycle events in the caller's transaction. The caller commits; nothing here commits."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from scim2_models import Context, PatchOp, SCIMException
from sqlalchemy import bindparam, insert, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, select

from broker.audit.log import append_audit
from broker.errors import Conflict, Mutability, NotFound, PreconditionFailed
from broker.lifecycle.events import EventKind, record_event
from broker.scim.auth import ScimCaller
from broker.scim.common import changed_attributes, check_body_id, check_domains, check_if_match, require_object
from broker.scim.models import GroupMember, ScimUser, ScimValue
from broker.scim.normalize import CORE_USER, normalize_patch, normalize_resource
from broker.scim.resources import (
    POLICY,
    UserModel,
    as_broker_error,
    fold,
    user_columns,
    user_document,
    user_values,
    validate_user,
)
from broker.types import utcnow

__all__ = ["create_user", "delete_user", "get_user", "patch_user", "replace_user"]

_USER_TABLE = ScimUser.__table__  # type: ignore[attr-defined]
_VALUE_TABLE = ScimValue.__table__  # type: ignore[attr-defined]
_USER_COLUMNS = tuple(c.name for c in _USER_TABLE.columns)
# Core statements built once: per call only parameters are bound, which is most of the saving over
# the ORM unit of work (rows written here are never read back in the same request).
_INSERT_USER = insert(_USER_TABLE).returning(_USER_TABLE.c.pk)
_UPDATE_USER = update(_USER_TABLE).where(
    _USER_TABLE.c.pk == bindparam("_pk"), _USER_TABLE.c.version == bindparam("_version")
)
_INSERT_VALUES = insert(_VALUE_TABLE)
_DELETE_VALUES = sql_delete(_VALUE_TABLE).where(_VALUE_TABLE.c.user_pk == bindparam("_pk"))


def get_user(*, session: Session, caller: ScimCaller, user_id: str, for_update: bool = False) -> ScimUser:
    """The partner's user with this id. Another partner's id is NotFound, exactly like a missing one.

    ``for_update`` locks the row until the transaction ends, so concurrent writes to one user queue
    instead of losing each other's changes (PostgreSQL; SQLite writers are already serialized).
    """
    if "\x00" in user_id:  # no id holds U+0000, and PostgreSQL cannot even compare with it (%00 in a URL)
        raise NotFound(f"User '{user_id}' not found")
    query = select(ScimUser).where(ScimUser.partner_id == caller.partner_id, ScimUser.id == user_id)
    row = session.exec(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"User '{user_id}' not found")
    return row


def _ensure_unique(session: Session, caller: ScimCaller, user_name: str, exclude_pk: int | None) -> None:
    query = select(ScimUser.pk).where(
        ScimUser.partner_id == caller.partner_id, ScimUser.user_name_ci == fold(user_name)
    )
    existing = session.exec(query).first()
    if existing is not None and existing != exclude_pk:
        raise Conflict(f"userName '{user_name}' is already taken by another user of this partner")


def _write_values(session: Session, row: ScimUser, doc: dict[str, Any], *, fresh: bool = False) -> None:
    """Rebuild the user's multi-valued index rows (Core statements: they are never read back here)."""
    assert row.pk is not None
    if not fresh:
        session.execute(_DELETE_VALUES, {"_pk": row.pk})
    values = [{"partner_id": row.partner_id, "user_pk": row.pk, **value} for value in user_values(doc)]
    if values:
        session.execute(_INSERT_VALUES, values)


def _ignored(model: UserModel, dropped_schemas: list[str]) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if model.unknown_attributes:
        detail["ignored_attributes"] = sorted(model.unknown_attributes)
    if dropped_schemas:
        detail["ignored_schemas"] = dropped_schemas
    return detail


def create_user(*, session: Session, caller: ScimCaller, payload: Any) -> ScimUser:
    """POST /Users. A user created active is a joiner."""
    body, dropped = normalize_resource(require_object(payload), core=CORE_USER, base_url=caller.base_url)
    model = validate_user(body, ctx=Context.RESOURCE_CREATION_REQUEST)
    doc = user_document(model, base_url=caller.base_url)
    doc.setdefault("active", True)  # the server's default at creation (RFC 7643 §2.5), made explicit
    _ensure_unique(session, caller, doc["userName"], None)
    detail = _ignored(model, dropped)
    warnings = check_domains(caller, None, doc)
    if warnings:
        detail["domain_warnings"] = warnings
    now = utcnow()
    columns = user_columns(doc)
    row = ScimUser(
        id=str(uuid.uuid4()),
        partner_id=caller.partner_id,
        attributes=doc,
        created_at=now,
        updated_at=now,
        joined_at=now if columns["active"] else None,
        **columns,
    )
    # A Core INSERT: the row is written once and never tracked, which costs a fraction of a flush.
    values = {c: getattr(row, c) for c in _USER_COLUMNS if c != "pk"}
    try:
        pk = session.execute(_INSERT_USER, values).scalar_one()
    except IntegrityError as exc:  # a concurrent writer won the userName race
        raise Conflict(f"userName '{doc['userName']}' is already taken by another user of this partner") from exc
    set_committed_value(row, "pk", pk)
    _write_values(session, row, doc, fresh=True)
    audit = append_audit(
        session,
        actor=caller.actor,
        action="scim.user.created",
        partner_id=caller.partner_id,
        resource_type="User",
        resource_id=row.id,
        after=doc,
        detail=detail,
    )
    if row.active:
        record_event(
            session,
            partner_id=caller.partner_id,
            kind=EventKind.JOINED,
            subject_type="user",
            subject_id=row.id,
            audit_id=audit.id,
        )
    return row


def _apply(
    session: Session,
    caller: ScimCaller,
    row: ScimUser,
    doc: dict[str, Any],
    action: str,
    detail: dict[str, Any],
) -> ScimUser:
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
        updated = session.execute(_UPDATE_USER, {**values, "_pk": row.pk, "_version": row.version}).rowcount  # type: ignore[attr-defined]
    except IntegrityError as exc:  # a concurrent writer won the userName race
        raise Conflict(f"userName '{doc['userName']}' is already taken by another user of this partner") from exc
    if updated != 1:  # another request changed this user after we read it: refuse rather than lose it
        raise PreconditionFailed(f"User '{row.id}' changed concurrently; retry the request")
    for key, value in values.items():
        set_committed_value(row, key, value)
    _write_values(session, row, doc)
    changed = changed_attributes(before, doc)
    audit = append_audit(
        session,
        actor=caller.actor,
        action=action,
        partner_id=caller.partner_id,
        resource_type="User",
        resource_id=row.id,
        before=before,
        after=doc,
        detail={"changed": changed, **detail},
    )

    def event(kind: EventKind, extra: dict[str, Any] | None = None) -> None:
        record_event(
            session,
            partner_id=caller.partner_id,
            kind=kind,
            subject_type="user",
            subject_id=row.id,
            detail=extra,
            audit_id=audit.id,
        )

    if was_active and not row.active:
        event(EventKind.LEFT, {"cause": "deactivated"})
    elif row.active and not was_active:
        event(EventKind.REJOINED if rejoin else EventKind.JOINED)
    attributes = [name for name in changed if name != "active"]
    if attributes:
        event(EventKind.UPDATED, {"attributes": attributes})
    return row


def replace_user(*, session: Session, caller: ScimCaller, user_id: str, payload: Any, if_match: str | None) -> ScimUser:
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


def patch_user(*, session: Session, caller: ScimCaller, user_id: str, payload: Any, if_match: str | None) -> ScimUser:
    """PATCH /Users/{id} (RFC 7644 §3.5.2): operations in order, all or nothing."""
    row = get_user(session=session, caller=caller, user_id=user_id, for_update=True)
    check_if_match(if_match, row.version)
    body = normalize_patch(require_object(payload), base_url=caller.base_url)
    try:
        current = UserModel.model_validate({**row.attributes, "id": row.id}, scim_policy=POLICY)
        operations = PatchOp[UserModel].model_validate(  # type: ignore[misc]
            body, scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=POLICY
        )
        operations.patch(current, scim_policy=POLICY)  # validates every value it assigns
        if current.id != row.id:
            raise Mutability(f"id is readOnly: cannot change it to '{current.id}'")
    except (ValidationError, SCIMException) as exc:
        raise as_broker_error(exc) from exc
    doc = user_document(current, base_url=caller.base_url)
    return _apply(session, caller, row, doc, "scim.user.patched", {})


def delete_user(*, session: Session, caller: ScimCaller, user_id: str, if_match: str | None) -> None:
    """DELETE /Users/{id}: a leaver (cause "deleted"), memberships dropped, the id then answers 404."""
    row = get_user(session=session, caller=caller, user_id=user_id, for_update=True)
    check_if_match(if_match, row.version)
    memberships = session.exec(
        select(GroupMember).where(GroupMember.partner_id == caller.partner_id, GroupMember.member_id == row.id)
    ).all()
    for membership in memberships:
        session.delete(membership)
    session.execute(_DELETE_VALUES, {"_pk": row.pk})
    session.delete(row)
    audit = append_audit(
        session,
        actor=caller.actor,
        action="scim.user.deleted",
        partner_id=caller.partner_id,
        resource_type="User",
        resource_id=row.id,
        before=row.attributes,
        detail={"was_active": row.active, "memberships_removed": len(memberships)},
    )
    record_event(
        session,
        partner_id=caller.partner_id,
        kind=EventKind.LEFT,
        subject_type="user",
        subject_id=row.id,
        detail={"cause": "deleted", "was_active": row.active},
        audit_id=audit.id,
    )
