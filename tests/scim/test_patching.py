"""The PATCH fast path (``broker.scim.patching.simple_patch``) against scim2-models (``full_patch``).

Whenever the fast path takes a body, it must store byte for byte the JSON scim2-models would have
stored (same keys, values and key order); every other body must be left to scim2-models.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scim2_models import Context

from broker.errors import BrokerError
from broker.scim.normalize import CORE_USER, ENTERPRISE, normalize_resource
from broker.scim.patching import _TARGETS, full_patch, simple_patch
from broker.scim.resources import user_document, validate_user
from tests.conftest import PATCH_SCHEMA

BASE = "https://entente.test/scim/v2"
USER_ID = "2819c223-7f76-453a-919d-413861904646"


def _stored(body: dict[str, Any]) -> dict[str, Any]:
    """A document as create_user stores it."""
    normalized, _ = normalize_resource(body, core=CORE_USER, base_url=BASE)
    doc = user_document(validate_user(normalized, ctx=Context.RESOURCE_CREATION_REQUEST), base_url=BASE)
    doc.setdefault("active", True)
    return doc


DOCS = [
    _stored({"schemas": [CORE_USER], "userName": "bare@p.test"}),
    _stored(
        {
            "schemas": [CORE_USER, ENTERPRISE],
            "userName": "full@p.test",
            "externalId": "ext-1",
            "name": {"givenName": "Ann", "familyName": "Lee", "formatted": "Ann Lee"},
            "displayName": "Ann Lee",
            "title": "CFO",
            "active": False,
            "emails": [{"value": "full@p.test", "type": "work", "primary": True}],
            ENTERPRISE: {"department": "Finance", "manager": {"value": "m-1"}, "employeeNumber": "7"},
        }
    ),
    _stored({"schemas": [CORE_USER], "userName": "named@p.test", "name": {"familyName": "Okafor"}, "locale": "fr-FR"}),
]
PATHS = sorted(_TARGETS)
SPELLINGS = {path: [path, path.upper(), path.title()] for path in PATHS}
VALUES: list[Any] = ["x", "", "  ", " padded ", "Ünïcødé ✓", "a" * 600, True, False, None, 0, ["x"], {"value": "x"}]


def _body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


def _compare(doc: dict[str, Any], body: dict[str, Any]) -> None:
    fast = simple_patch(doc, body)
    if fast is None:
        return
    try:
        slow = full_patch(doc, USER_ID, body, base_url=BASE)
    except BrokerError as error:  # pragma: no cover - a failure message, not a branch
        pytest.fail(f"fast path accepted what scim2-models refuses ({error.detail}): {body}")
    assert json.dumps(fast) == json.dumps(slow), body


@pytest.mark.parametrize("doc", DOCS, ids=["bare", "full", "named"])
@pytest.mark.parametrize("path", PATHS)
def test_each_target_matches_scim2_models(doc: dict[str, Any], path: str) -> None:
    for spelling in SPELLINGS[path]:
        for verb in ("add", "replace", "Replace", "ADD"):
            for value in VALUES:
                _compare(doc, _body({"op": verb, "path": spelling, "value": value}))


def test_the_common_shapes_take_the_fast_path() -> None:
    doc = DOCS[1]
    for body in (
        _body({"op": "replace", "path": "title", "value": "t1"}),
        _body({"op": "Replace", "path": "active", "value": True}),
        _body({"op": "add", "path": f"{ENTERPRISE}:department", "value": "Ops"}),
        _body(
            {"op": "replace", "path": "name.givenName", "value": "Al"},
            {"op": "add", "path": "nickName", "value": "A"},
        ),
    ):
        assert simple_patch(doc, body) is not None, body
        _compare(doc, body)


@pytest.mark.parametrize(
    "body",
    [
        _body({"op": "remove", "path": "title"}),
        _body({"op": "replace", "path": "active", "value": "False"}),  # Entra's string boolean
        _body({"op": "replace", "value": {"title": "x"}}),
        _body({"op": "replace", "path": 'emails[type eq "work"].value', "value": "a@p.test"}),
        _body({"op": "replace", "path": f"{CORE_USER}:title", "value": "x"}),
        _body({"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": "m"}}),
        _body({"op": "replace", "path": "title", "value": "x", "extra": 1}),
        _body({"op": "replace", "path": "userName", "value": "  "}),
        _body({"op": "replace", "path": "id", "value": "other"}),
        _body(),
        {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "title", "value": "x"}], "x": 1},
        {"schemas": [], "Operations": [{"op": "replace", "path": "title", "value": "x"}]},
        {"schemas": [PATCH_SCHEMA], "operations": [{"op": "replace", "path": "title", "value": "x"}]},
    ],
)
def test_anything_else_goes_to_scim2_models(body: dict[str, Any]) -> None:
    assert simple_patch(DOCS[1], body) is None


_operations = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "replace", "Replace", "remove"]),
        "path": st.sampled_from([*PATHS, "emails", "name", f"{ENTERPRISE}:manager", "Title"]),
        "value": st.one_of(st.text(max_size=20), st.booleans(), st.none()),
    }
)


@settings(max_examples=300, deadline=None)
@given(doc=st.sampled_from(DOCS), operations=st.lists(_operations, min_size=1, max_size=4))
def test_generated_bodies_match_scim2_models(doc: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    _compare(doc, _body(*operations))
