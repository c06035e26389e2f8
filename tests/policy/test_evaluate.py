"""The pure evaluator, table-driven from tests/policy/cases/*.yaml, plus the properties it must always keep."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.policy.evaluate import Change, ChangeKind, diff_decisions, evaluate
from broker.policy.facts import Decision, Grant, SubjectFacts
from broker.policy.loader import load_policies
from broker.policy.model import PolicySet

CASES = Path(__file__).parent / "cases"
TABLES = ["matching.yaml", "tenancy.yaml", "expiry.yaml", "merge.yaml"]
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _facts(raw: dict[str, Any]) -> SubjectFacts:
    """Case facts: only what a case says, with a person who is active unless stated."""
    return SubjectFacts(
        tenant=raw["tenant"],
        subject_id=raw.get("subject_id", "u1"),
        active=raw.get("active", True),
        user_name=raw.get("user_name", "person"),
        groups=frozenset(raw.get("groups", [])),
        attributes=dict(raw.get("attributes", {})),
        verified_emails=frozenset(raw.get("verified_emails", [])),
        joined_at=raw.get("joined_at"),
    )


def _table_cases() -> list[Any]:
    params = []
    for table in TABLES:
        doc = yaml.safe_load((CASES / table).read_text(encoding="utf-8"))
        for case in doc["cases"]:
            params.append(
                pytest.param(
                    case.get("policies", doc["policies"]),
                    case["facts"],
                    case.get("now", doc["now"]),
                    case["expect"],
                    id=f"{table.removesuffix('.yaml')}: {case['name']}",
                )
            )
    return params


@pytest.mark.parametrize(("policies", "facts", "now", "expect"), _table_cases())
def test_table(policies: str, facts: dict[str, Any], now: dt.datetime, expect: list[dict[str, Any]]) -> None:
    decision = evaluate(load_policies(policies), _facts(facts), now)
    assert decision == Decision(tuple(Grant(**grant) for grant in expect))


def test_every_table_case_file_is_listed() -> None:
    assert sorted(path.name for path in CASES.glob("*.yaml")) == sorted([*TABLES, "invalid.yaml"])


def test_now_and_joined_at_must_be_aware() -> None:
    policies = load_policies("rules: []")
    facts = SubjectFacts(tenant="acme", subject_id="u1", active=True, user_name="kim")
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        evaluate(policies, facts, dt.datetime(2026, 6, 1))
    naive_join = SubjectFacts(
        tenant="acme", subject_id="u1", active=True, user_name="kim", joined_at=dt.datetime(2026, 1, 1)
    )
    with pytest.raises(ValueError, match="joined_at must be timezone-aware"):
        evaluate(policies, naive_join, NOW)


# --- diff_decisions ---------------------------------------------------------------------------------

LATER = dt.datetime(2026, 12, 31, tzinfo=dt.UTC)


def test_diff_gain_lose_change() -> None:
    before = Decision(
        (
            Grant("chat", "member", "r1"),
            Grant("repo", "contributor", "r2"),
            Grant("wiki", "viewer", "r3", until=NOW),
            Grant("board", "member", "r5"),
        )
    )
    after = Decision(
        (
            Grant("board", "member", "r5"),
            Grant("chat", "admin", "r4"),
            Grant("handbook", "viewer", "r6"),
            Grant("wiki", "viewer", "r3", until=LATER),
        )
    )
    changes = diff_decisions(before, after)
    assert changes == [
        Change(ChangeKind.CHANGE, "chat", Grant("chat", "member", "r1"), Grant("chat", "admin", "r4")),
        Change(ChangeKind.GAIN, "handbook", None, Grant("handbook", "viewer", "r6")),
        Change(ChangeKind.LOSE, "repo", Grant("repo", "contributor", "r2"), None),
        Change(ChangeKind.CHANGE, "wiki", Grant("wiki", "viewer", "r3", NOW), Grant("wiki", "viewer", "r3", LATER)),
    ]
    assert [change.role_changed for change in changes] == [True, True, True, False]


def test_diff_of_equal_decisions_is_empty() -> None:
    decision = Decision((Grant("chat", "member", "r1"),))
    assert diff_decisions(decision, decision) == []
    assert diff_decisions(Decision(), Decision()) == []


# --- properties ---------------------------------------------------------------------------------------

TENANTS = ["acme", "globex"]
GROUPS = ["eng", "Eng", "ops", "leads"]
WORKSPACES = ["chat", "wiki", "repo"]
DOMAINS = ["acme.com", "globex.com"]
BASE = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
moments = st.integers(min_value=-400, max_value=400).map(lambda days: BASE + dt.timedelta(days=days))


@st.composite
def rules(draw: st.DrawFn, index: int) -> dict[str, Any]:
    when: dict[str, Any] = {}
    if draw(st.booleans()):
        when["groups_any"] = draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2))
    if draw(st.booleans()):
        when["groups_all"] = draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2))
    if draw(st.booleans()):
        when["attributes"] = {"userType": draw(st.sampled_from(["Employee", "Contractor", ["Employee", "Contractor"]]))}
    if draw(st.booleans()):
        when["email_domain_any"] = draw(st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=2))
    workspaces = draw(st.lists(st.sampled_from(WORKSPACES), min_size=1, max_size=3, unique=True))
    rule: dict[str, Any] = {
        "id": f"rule-{index}",
        "tenant": draw(st.sampled_from(TENANTS)),
        "when": when,
        "grant": [{"workspace": w, "role": draw(st.sampled_from(["viewer", "member", "admin"]))} for w in workspaces],
    }
    if draw(st.booleans()):
        rule["until"] = draw(moments).date()
    if draw(st.booleans()):
        rule["max_duration"] = f"{draw(st.integers(min_value=1, max_value=365))}d"
    return rule


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicySet:
    count = draw(st.integers(min_value=0, max_value=6))
    return PolicySet.model_validate([draw(rules(index)) for index in range(count)])


@st.composite
def people(draw: st.DrawFn) -> SubjectFacts:
    return SubjectFacts(
        tenant=draw(st.sampled_from(TENANTS)),
        subject_id="u1",
        active=draw(st.booleans()),
        user_name="person",
        groups=frozenset(draw(st.lists(st.sampled_from(GROUPS), max_size=3))),
        attributes=draw(st.sampled_from([{}, {"userType": "Employee"}, {"usertype": "contractor"}])),
        verified_emails=frozenset(f"p@{d}" for d in draw(st.lists(st.sampled_from(DOMAINS), max_size=2))),
        joined_at=draw(st.none() | moments),
    )


PROPERTY = settings(max_examples=150, deadline=None, database=None)


@PROPERTY
@given(facts=people(), now=moments)
def test_no_rules_grant_nothing(facts: SubjectFacts, now: dt.datetime) -> None:
    assert evaluate(PolicySet.model_validate([]), facts, now) == Decision()


@PROPERTY
@given(policies=policy_sets(), facts=people(), now=moments)
def test_decisions_keep_their_invariants(policies: PolicySet, facts: SubjectFacts, now: dt.datetime) -> None:
    decision = evaluate(policies, facts, now)
    assert decision == evaluate(policies, facts, now)  # deterministic
    rules_by_id = {rule.id: rule for rule in policies.rules}
    workspaces = [grant.workspace for grant in decision.grants]
    assert workspaces == sorted(set(workspaces))  # one grant per workspace, sorted
    if not facts.active:
        assert decision == Decision()
    for grant in decision.grants:
        rule = rules_by_id[grant.rule_id]
        assert rule.tenant == facts.tenant  # never another partner's rule
        assert any(spec.workspace == grant.workspace and spec.role == grant.role for spec in rule.grant)
        assert grant.until is None or grant.until > now  # never expired
        if rule.max_duration is not None:
            assert facts.joined_at is not None and grant.until is not None
            assert grant.until <= facts.joined_at + rule.max_duration


@PROPERTY
@given(policies=policy_sets(), facts=people(), now=moments, data=st.data())
def test_rule_order_does_not_matter(
    policies: PolicySet, facts: SubjectFacts, now: dt.datetime, data: st.DataObject
) -> None:
    shuffled = PolicySet.model_validate({"rules": data.draw(st.permutations(policies.rules))})
    assert evaluate(shuffled, facts, now) == evaluate(policies, facts, now)


@PROPERTY
@given(policies=policy_sets(), extra=rules(99), facts=people(), now=moments)
def test_adding_a_rule_never_takes_access_away(
    policies: PolicySet, extra: dict[str, Any], facts: SubjectFacts, now: dt.datetime
) -> None:
    before = evaluate(policies, facts, now)
    after = evaluate(PolicySet.model_validate([*policies.rules, extra]), facts, now)
    order = policies.role_order
    for change in diff_decisions(before, after):
        assert change.kind is not ChangeKind.LOSE
        if change.kind is ChangeKind.CHANGE:
            assert change.before is not None and change.after is not None
            roles = order(change.workspace)
            assert roles.index(change.after.role) >= roles.index(change.before.role)


@PROPERTY
@given(policies=policy_sets(), facts=people(), now=moments)
def test_diff_from_nothing_is_all_gains(policies: PolicySet, facts: SubjectFacts, now: dt.datetime) -> None:
    decision = evaluate(policies, facts, now)
    assert [change.kind for change in diff_decisions(Decision(), decision)] == [ChangeKind.GAIN] * len(decision.grants)
    assert [change.kind for change in diff_decisions(decision, Decision())] == [ChangeKind.LOSE] * len(decision.grants)
    assert diff_decisions(decision, decision) == []
