"""RFC 7644 §3.7 Bulk: operations in one transaction, each in its own savepoint, with ``bulkId``
references (forward ones included) resolved before an operation runs, and ``failOnErrors``."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from scim2_models import BulkRequest, BulkResponse, Error
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.errors import BrokerError, Conflict, InvalidSyntax, InvalidValue, PayloadTooLarge
from broker.scim import groups, users
from broker.scim.auth import ScimCaller
from broker.scim.resources import etag, fold

__all__ = ["run_bulk"]

BULK_REQUEST = str(BulkRequest.__schema__)
BULK_RESPONSE = str(BulkResponse.__schema__)
ERROR = str(Error.__schema__)
_PATH = re.compile(r"^/?(?P<type>users|groups)(?:/(?P<id>[^/]+))?/?$", re.IGNORECASE)
_REF = re.compile(r"^bulkId:(.+)$")


class _Unresolved(Exception):
    """An operation refers to a bulkId that no earlier operation has produced yet."""

    def __init__(self, bulk_id: str) -> None:
        self.bulk_id = bulk_id


@dataclass
class _Op:
    index: int
    method: str
    path: str
    bulk_id: str | None
    version: str | None
    data: Any
    result: dict[str, Any] | None = field(default=None)


def _refs(value: Any, created: dict[str, str]) -> Any:
    """``value`` with every ``bulkId:<id>`` string replaced by the id it produced."""
    if isinstance(value, str):
        match = _REF.match(value)
        if match:
            if match.group(1) not in created:
                raise _Unresolved(match.group(1))
            return created[match.group(1)]
        return value
    if isinstance(value, list):
        return [_refs(v, created) for v in value]
    if isinstance(value, dict):
        return {k: _refs(v, created) for k, v in value.items()}
    return value


def _error_body(error: BrokerError) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [ERROR], "status": str(error.status), "detail": error.detail}
    if error.scim_type:
        body["scimType"] = error.scim_type
    return body


def _execute(session: Session, caller: ScimCaller, op: _Op, created: dict[str, str]) -> dict[str, Any]:
    data = _refs(op.data, created)
    match = _PATH.match(op.path or "")
    if match is None:
        raise InvalidValue(f"bulk path '{op.path}' must be /Users, /Groups, /Users/<id> or /Groups/<id>")
    kind, resource_id = match.group("type").lower(), match.group("id")
    if resource_id is not None:  # `/Users/bulkId:qwerty` (RFC 7644 §3.7.2): the reference is the id segment
        resource_id = _refs(resource_id, created)
    base = f"{caller.base_url}/{'Users' if kind == 'users' else 'Groups'}"
    if op.method == "POST":
        if resource_id is not None:
            raise InvalidValue("POST takes a resource type path such as /Users")
        if not op.bulk_id:
            raise InvalidValue("POST operations need a bulkId")
        row = (users.create_user if kind == "users" else groups.create_group)(
            session=session, caller=caller, payload=data
        )
        created[op.bulk_id] = row.id
        return {"status": "201", "location": f"{base}/{row.id}", "version": etag(row.version)}
    if resource_id is None:
        raise InvalidValue(f"{op.method} needs a resource path such as /Users/<id>")
    if op.method == "DELETE":
        if kind == "users":
            users.delete_user(session=session, caller=caller, user_id=resource_id, if_match=op.version)
        else:
            groups.delete_group(session=session, caller=caller, group_id=resource_id, if_match=op.version)
        return {"status": "204", "location": f"{base}/{resource_id}"}
    if op.method in ("PUT", "PATCH"):
        if kind == "users":
            write = users.replace_user if op.method == "PUT" else users.patch_user
            row_u = write(session=session, caller=caller, user_id=resource_id, payload=data, if_match=op.version)
            version = row_u.version
        else:
            write_g = groups.replace_group if op.method == "PUT" else groups.patch_group
            row_g = write_g(session=session, caller=caller, group_id=resource_id, payload=data, if_match=op.version)
            version = row_g.version
        return {"status": "200", "location": f"{base}/{resource_id}", "version": etag(version)}
    raise InvalidValue(f"bulk method '{op.method}' is not one of POST, PUT, PATCH, DELETE")


def _parse(payload: Any, max_operations: int) -> tuple[list[_Op], int | None]:
    if not isinstance(payload, dict):
        raise InvalidSyntax("the Bulk request body must be a JSON object")
    schemas = payload.get("schemas")
    if not isinstance(schemas, list) or BULK_REQUEST.lower() not in [str(s).lower() for s in schemas]:
        raise InvalidSyntax(f"schemas must contain {BULK_REQUEST}")
    operations = payload.get("Operations", payload.get("operations"))
    if not isinstance(operations, list):
        raise InvalidSyntax("Operations must be a list")
    if len(operations) > max_operations:
        raise PayloadTooLarge(f"{len(operations)} operations exceed maxOperations {max_operations}")
    fail_on_errors = payload.get("failOnErrors")
    if fail_on_errors is not None and (
        not isinstance(fail_on_errors, int) or isinstance(fail_on_errors, bool) or fail_on_errors < 1
    ):
        raise InvalidValue("failOnErrors must be a positive integer")
    ops: list[_Op] = []
    seen: set[str] = set()
    for index, raw in enumerate(operations):
        if not isinstance(raw, dict):
            raise InvalidSyntax(f"operation {index} must be an object")
        lowered = {str(k).lower(): v for k, v in raw.items()}
        method, path, bulk_id = lowered.get("method"), lowered.get("path"), lowered.get("bulkid")
        if not isinstance(method, str) or not isinstance(path, str):
            raise InvalidSyntax(f"operation {index} needs a method and a path")
        if bulk_id is not None:
            if not isinstance(bulk_id, str) or not bulk_id or bulk_id in seen:
                raise InvalidValue(f"operation {index}: bulkId must be a unique non-empty string")
            seen.add(bulk_id)
        version = lowered.get("version")
        ops.append(
            _Op(
                index,
                method.upper(),
                path,
                bulk_id,
                version if isinstance(version, str) else None,
                lowered.get("data"),
            )
        )
    return ops, fail_on_errors


def _failed(op: _Op, error: BrokerError, status: str | None = None) -> None:
    op.result = {"status": status or str(error.status), "response": _error_body(error)}
    if status:
        op.result["response"]["status"] = status


def _run_one(session: Session, caller: ScimCaller, op: _Op, created: dict[str, str], producers: set[str]) -> str:
    """Run one operation in its own savepoint: "ok", "error", or "deferred" (it names a bulkId a later
    operation of this request produces)."""
    savepoint = session.begin_nested()
    try:
        op.result = _execute(session, caller, op, created)
        savepoint.commit()
    except _Unresolved as missing:
        savepoint.rollback()
        if missing.bulk_id in producers and missing.bulk_id not in created:
            return "deferred"
        detail = f"bulkId '{missing.bulk_id}' does not name a POST of this request that succeeded"
        _failed(op, InvalidValue(detail), "409")
        return "error"
    except BrokerError as error:
        savepoint.rollback()
        _failed(op, error)
        return "error"
    return "ok"


def _creates_user(op: _Op) -> bool:
    """A POST /Users that refers to no bulkId: it can be written together with its neighbours."""
    match = _PATH.match(op.path or "")
    return (
        op.method == "POST"
        and bool(op.bulk_id)
        and match is not None
        and match.group("type").lower() == "users"
        and match.group("id") is None
        and not _mentions_bulk_id(op.data)
    )


def _mentions_bulk_id(value: Any) -> bool:
    if isinstance(value, str):
        return _REF.match(value) is not None
    if isinstance(value, list):
        return any(_mentions_bulk_id(v) for v in value)
    if isinstance(value, dict):
        return any(_mentions_bulk_id(v) for v in value.values())
    return False


def _create_users(
    session: Session, caller: ScimCaller, ops: list[_Op], created: dict[str, str], budget: int | None
) -> tuple[int, int] | None:
    """Consecutive POST /Users operations as one batch: each validated on its own (its error its own,
    counted in order against failOnErrors exactly as one by one), the valid ones written together
    (``users.insert_users``). Returns (operations run, errors), or None, having changed nothing, when
    a concurrent writer took one of the userNames meanwhile: then run them one by one.
    """
    candidates: list[users.Candidate | BrokerError] = []
    for op in ops:
        try:
            candidates.append(users.candidate(caller=caller, payload=op.data))
        except BrokerError as error:
            candidates.append(error)
    names = {fold(c.doc["userName"]) for c in candidates if isinstance(c, users.Candidate)}
    taken = users.taken_user_names(session=session, caller=caller, names=names)
    admitted: list[tuple[_Op, users.NewUser]] = []
    failures: list[tuple[_Op, BrokerError]] = []
    ran = 0
    for op, new in zip(ops, candidates, strict=True):
        if budget is not None and len(failures) >= budget:
            break
        ran += 1
        try:
            if isinstance(new, BrokerError):
                raise new
            name = new.doc["userName"]
            if fold(name) in taken:
                raise Conflict(f"userName '{name}' is already taken by another user of this partner")
            admitted.append((op, users.admit(caller=caller, candidate=new)))
            taken.add(fold(name))
        except BrokerError as error:
            failures.append((op, error))
    savepoint = session.begin_nested()
    try:
        rows = users.insert_users(session=session, caller=caller, users=[user for _, user in admitted])
        savepoint.commit()
    except IntegrityError:
        savepoint.rollback()
        return None
    base = f"{caller.base_url}/Users"
    for (op, _), row in zip(admitted, rows, strict=True):
        assert op.bulk_id is not None
        created[op.bulk_id] = row.id
        op.result = {"status": "201", "location": f"{base}/{row.id}", "version": etag(row.version)}
    for op, failure in failures:
        _failed(op, failure)
    return ran, len(failures)


def run_bulk(*, session: Session, caller: ScimCaller, payload: Any) -> dict[str, Any]:
    """Run a BulkRequest in the caller's transaction and build the BulkResponse; the caller commits.

    Operations run in order, each atomic: in its own savepoint, or, for a run of user creations
    that refer to no bulkId (an IdP's initial import), validated one by one and written together.
    """
    ops, fail_on_errors = _parse(payload, caller.settings.scim_bulk_max_operations)
    created: dict[str, str] = {}
    producers = {op.bulk_id for op in ops if op.bulk_id and op.method == "POST"}
    pending = list(ops)
    errors = 0
    stopped = False
    while pending and not stopped:
        deferred: list[_Op] = []
        index = 0
        while index < len(pending):
            budget = None if fail_on_errors is None else fail_on_errors - errors
            if budget is not None and budget <= 0:
                stopped = True
                break
            run = list(itertools.takewhile(_creates_user, pending[index:]))
            outcome = _create_users(session, caller, run, created, budget) if len(run) > 1 else None
            if outcome is not None:
                ran, failed = outcome
                errors += failed
                index += ran
                continue
            for op in run or pending[index : index + 1]:  # one by one: the old way, and the fallback
                if fail_on_errors is not None and errors >= fail_on_errors:
                    break
                status = _run_one(session, caller, op, created, producers)
                if status == "deferred":
                    deferred.append(op)
                errors += status == "error"
                index += 1
        if len(deferred) == len(pending):  # no progress: circular or dangling references
            for op in deferred:
                _failed(op, InvalidValue("circular or unresolvable bulkId reference"), "409")
                errors += 1
            break
        pending = deferred
    results = []
    for op in ops:
        if op.result is None:
            continue  # not reached: failOnErrors stopped the run
        entry = {"method": op.method, **op.result}
        if op.bulk_id:
            entry["bulkId"] = op.bulk_id
        results.append(entry)
    return {"schemas": [BULK_RESPONSE], "Operations": results}
