"""The policy model and loader: schema drift, shipped files, and every refusal with its exact message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from broker.errors import BadRequest
from broker.policy.evaluate import evaluate
from broker.policy.facts import Grant, SubjectFacts
from broker.policy.loader import PolicyError, load_policies, load_policy_documents
from broker.policy.model import (
    DEFAULT_ROLES,
    SCHEMA_PATH,
    GrantSpec,
    PolicySet,
    Rule,
    When,
    WorkspaceSpec,
    main,
    parse_duration,
    schema_json,
)

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
CASES = Path(__file__).parent / "cases"
INVALID = yaml.safe_load((CASES / "invalid.yaml").read_text(encoding="utf-8"))["cases"]


# --- the schema ---------------------------------------------------------------------------------


def test_committed_schema_matches_the_model() -> None:
    assert SCHEMA_PATH == POLICIES / "schema.json"
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_json(), (
        "policies/schema.json has drifted from broker/policy/model.py: run `python -m broker.policy.model`"
    )


def test_generator_check_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert main(["--bogus"]) == 2
    assert "usage" in capsys.readouterr().err


def test_schema_is_stable_and_ends_with_a_newline() -> None:
    assert schema_json() == schema_json()
    assert schema_json().endswith("}\n")


def test_schema_accepts_the_three_file_shapes() -> None:
    schema = PolicySet.model_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    full, rule, rules = schema["anyOf"]
    assert set(full["properties"]) == {"roles", "workspaces", "rules"}
    assert rule == {"$ref": "#/$defs/Rule"}
    assert rules == {"type": "array", "items": {"$ref": "#/$defs/Rule"}}


@pytest.mark.parametrize("model", [PolicySet, WorkspaceSpec, Rule, When, GrantSpec])
def test_every_field_is_described_and_unknown_keys_are_forbidden(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid"
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"


def test_every_object_in_the_schema_forbids_unknown_keys() -> None:
    schema = PolicySet.model_json_schema()
    objects = [schema["anyOf"][0], *schema["$defs"].values()]
    for obj in objects:
        assert obj["additionalProperties"] is False
        for prop in obj["properties"].values():
            assert prop.get("description"), prop


# --- durations and dates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", dt.timedelta(days=90)),
        ("2w", dt.timedelta(weeks=2)),
        ("12h", dt.timedelta(hours=12)),
        ("P90D", dt.timedelta(days=90)),
        ("P2W", dt.timedelta(weeks=2)),
        ("PT12H", dt.timedelta(hours=12)),
        ("PT90M", dt.timedelta(minutes=90)),
        ("P1DT2H30M15S", dt.timedelta(days=1, hours=2, minutes=30, seconds=15)),
    ],
)
def test_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "P", "PT", "P1DT", "P1Y", "P1M", "P1W2D", "90", "90 d", "90D", "1m", "-1d", "P-1D"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_until_date_means_through_the_end_of_that_day() -> None:
    rule = Rule.model_validate(
        {
            "id": "r",
            "tenant": "acme",
            "when": {},
            "grant": [{"workspace": "w", "role": "member"}],
            "until": "2026-12-31",
        }
    )
    assert rule.until == dt.date(2026, 12, 31)
    assert rule.until_instant() == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_until_datetime_is_stored_in_utc() -> None:
    rule = Rule.model_validate(
        {
            "id": "r",
            "tenant": "acme",
            "when": {},
            "grant": [{"workspace": "w", "role": "member"}],
            "until": "2026-12-31T18:00:00+02:00",
        }
    )
    assert rule.until_instant() == dt.datetime(2026, 12, 31, 16, tzinfo=dt.UTC)
    assert rule.until_instant().tzinfo is dt.UTC  # type: ignore[union-attr]


def test_single_attribute_value_is_a_one_item_list() -> None:
    when = When.model_validate({"attributes": {"title": "Engineer", "userType": ["Employee", "Contractor"]}})
    assert when.attributes == {"title": ["Engineer"], "userType": ["Employee", "Contractor"]}


# --- the model used directly (without the loader) -------------------------------------------------


def _rule(rule_id: str, role: str = "member", workspace: str = "chat") -> dict[str, Any]:
    return {"id": rule_id, "tenant": "acme", "when": {}, "grant": [{"workspace": workspace, "role": role}]}


def test_model_alone_refuses_duplicate_ids_and_unranked_roles() -> None:
    with pytest.raises(ValidationError, match="rule id 'a' is used twice"):
        PolicySet.model_validate([_rule("a"), _rule("a")])
    with pytest.raises(ValidationError, match="role 'editor' is not in the role order"):
        PolicySet.model_validate([_rule("a", role="editor")])


def test_role_orders() -> None:
    policies = PolicySet.model_validate(
        {"roles": ["guest", "owner"], "workspaces": {"repo": {"roles": ["reader", "writer"]}}, "rules": []}
    )
    assert policies.role_order("repo") == ("reader", "writer")
    assert policies.role_order("chat") == ("guest", "owner")
    assert PolicySet.model_validate([]).role_order("chat") == DEFAULT_ROLES == ("viewer", "member", "admin")


def test_json_round_trip_keeps_the_set() -> None:
    policies = load_policies([POLICIES / "examples"])
    assert PolicySet.model_validate(policies.model_dump(mode="json")) == policies


# --- the loader -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID, ids=[case["name"] for case in INVALID])
def test_invalid_documents(case: dict[str, Any]) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_documents(list(case["documents"].items()))
    assert [str(problem) for problem in caught.value.problems] == case["errors"]
    assert str(caught.value) == "\n".join(case["errors"])


def test_policy_error_names_file_rule_and_field() -> None:
    text = "- {id: acme-eng, tenant: acme, when: {groups_anyy: [eng]}, grant: [{workspace: chat, role: member}]}"
    with pytest.raises(PolicyError) as caught:
        load_policies(text, name="tenant acme")
    error = caught.value
    assert (error.source, error.rule_id, error.field) == ("tenant acme", "acme-eng", "when.groups_anyy")
    assert isinstance(error, BadRequest) and error.status == 400


def test_three_file_shapes_load_the_same_rule() -> None:
    rule = "{id: r, tenant: acme, when: {groups_any: [eng]}, grant: [{workspace: chat, role: member}]}"
    shapes = [rule, f"[{rule}]", f"{{rules: [{rule}]}}"]
    loaded = [load_policies(text) for text in shapes]
    assert loaded[0] == loaded[1] == loaded[2]
    assert [r.id for r in loaded[0].rules] == ["r"]


def test_no_documents_is_the_empty_set() -> None:
    assert load_policy_documents([]).rules == []


def test_directory_loads_yaml_files_by_name(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("- " + yaml.safe_dump(_rule("b"), default_flow_style=True), encoding="utf-8")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump([_rule("a")]), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a policy", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text(yaml.safe_dump([_rule("c")]), encoding="utf-8")
    assert [rule.id for rule in load_policies(tmp_path).rules] == ["a", "b"]
    assert [rule.id for rule in load_policies([tmp_path, tmp_path / "sub" / "c.yaml"]).rules] == ["a", "b", "c"]


def test_duplicate_ids_across_real_files_name_both(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump([_rule("same")]), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(yaml.safe_dump([_rule("same", workspace="wiki")]), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert (
        str(caught.value) == f"{tmp_path / 'b.yaml'}: rule 'same': id: rule id is already used in {tmp_path / 'a.yaml'}"
    )


def test_every_file_is_checked_before_failing(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- {id: a, tenant: ACME, when: {}, grant: []}\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("{}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert [(p.source, p.rule_id, p.field) for p in caught.value.problems] == [
        (str(tmp_path / "a.yaml"), "a", "tenant"),
        (str(tmp_path / "a.yaml"), "a", "grant"),
        (str(tmp_path / "b.yaml"), None, "rules"),
    ]


def test_unreadable_sources(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="directory holds no"):
        load_policies(tmp_path)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policies(tmp_path / "missing.yaml")


def test_yaml_tags_beyond_safe_load_are_refused() -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policies("!!python/object/apply:os.system ['true']")


# --- the shipped policies -------------------------------------------------------------------------


def test_default_policy_denies_everything() -> None:
    policies = load_policies(POLICIES / "default.yaml")
    assert policies.rules == []
    assert load_policies(POLICIES).rules == []  # the directory holds only default.yaml at top level
    facts = SubjectFacts(tenant="acme", subject_id="u1", active=True, user_name="kim", groups=frozenset({"eng"}))
    assert evaluate(policies, facts, dt.datetime(2026, 6, 1, tzinfo=dt.UTC)).grants == ()


def test_examples_load_together_and_grant_what_their_comments_say() -> None:
    policies = load_policies([POLICIES, POLICIES / "examples"])
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    lead = SubjectFacts(
        tenant="acme",
        subject_id="u1",
        active=True,
        user_name="lee",
        groups=frozenset({"Engineering", "project-leads"}),
        verified_emails=frozenset({"lee@acme.com"}),
    )
    assert evaluate(policies, lead, now).grants == (
        Grant("shared-chat", "admin", "acme-leads-chat-admin", dt.datetime(2027, 7, 1, tzinfo=dt.UTC)),
    )
    contractor = SubjectFacts(
        tenant="globex",
        subject_id="u2",
        active=True,
        user_name="cy",
        attributes={"userType": "Contractor", "department": "Research"},
        joined_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
    )
    assert evaluate(policies, contractor, now).grants == (
        Grant("wiki", "viewer", "globex-contractors-wiki", dt.datetime(2026, 7, 30, tzinfo=dt.UTC)),
    )
    maintainer = SubjectFacts(
        tenant="initech",
        subject_id="u3",
        active=True,
        user_name="pm",
        groups=frozenset({"developers", "maintainers"}),
        attributes={"title": "Staff Engineer"},
        verified_emails=frozenset({"pm@initech.example"}),
        joined_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert evaluate(policies, maintainer, now).grants == (
        Grant("shared-chat", "member", "initech-devs-repo", dt.datetime(2026, 6, 30, tzinfo=dt.UTC)),
        Grant("tps-repo", "maintainer", "initech-maintainers-repo", None),
    )
