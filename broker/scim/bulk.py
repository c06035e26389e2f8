"""RFC 7644 §3.7 Bulk: operations in one transaction, each in its own savepoint, with ``bulkId``
references (forward ones included) resolved before an operation runs, and ``failOnErrors``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from scim2_models import BulkRequest, BulkResponse, Error
from sqlmodel import Session

from broker.errors import BrokerError, InvalidSyntax, InvalidValue, PayloadTooLarge
from broker.scim import groups, users
from broker.scim.auth import ScimCaller
from broker.scim.resources import etag

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


def run_bulk(*, session: Session, caller: ScimCaller, payload: Any) -> dict[str, Any]:
    """Run a BulkRequest in the caller's transaction and build the BulkResponse; the caller commits."""
    ops, fail_on_errors = _parse(payload, caller.settings.scim_bulk_max_operations)
    created: dict[str, str] = {}
    producers = {op.bulk_id for op in ops if op.bulk_id and op.method == "POST"}
    pending = list(ops)
    errors = 0
    stopped = False
    while pending and not stopped:
        deferred: list[_Op] = []
        for op in pending:
            if fail_on_errors is not None and errors >= fail_on_errors:
                stopped = True
                break
            savepoint = session.begin_nested()
            try:
                op.result = _execute(session, caller, op, created)
                savepoint.commit()
            except _Unresolved as missing:
                savepoint.rollback()
                if missing.bulk_id in producers and missing.bulk_id not in created:
                    deferred.append(op)
                    continue
                op.result = {
                    "status": "409",
                    "response": _error_body(
                        InvalidValue(f"bulkId '{missing.bulk_id}' does not name a POST of this request that succeeded")
                    ),
                }
                op.result["response"]["status"] = "409"
                errors += 1
            except BrokerError as error:
                savepoint.rollback()
                op.result = {"status": str(error.status), "response": _error_body(error)}
                errors += 1
        if len(deferred) == len(pending):  # no progress: circular or dangling references
            for op in deferred:
                op.result = {
                    "status": "409",
                    "response": {
                        **_error_body(InvalidValue("circular or unresolvable bulkId reference")),
                        "status": "409",
                    },
                }
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
