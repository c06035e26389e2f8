"""The pure evaluator: a policy set, one person's facts and a moment -> the grants that person holds.

Default deny: no rule, no matching rule, an inactive person or an expired rule all give an empty
:class:`Decision`. No I/O and no clock: the caller passes ``now``, so the same inputs always give
the same decision (the lifecycle engine and ``entente policy diff`` rely on that).

Merging, when several rules grant one workspace: the highest role by the workspace's role order
wins; between equal roles the latest ``until`` (``None`` = no end, which beats any date); then the
smallest rule id, so the result never depends on the order of rules or files.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from broker.policy.facts import Decision, Grant, SubjectFacts
from broker.policy.model import PolicySet, Rule, When

__all__ = ["Change", "ChangeKind", "diff_decisions", "evaluate"]


def evaluate(policies: PolicySet, facts: SubjectFacts, now: dt.datetime) -> Decision:
    """Every grant ``facts`` earns at ``now``, at most one per workspace, sorted by workspace; empty = no access.

    Each grant carries the id of the rule that made it and its effective end: the earlier of the
    rule's ``until`` and ``joined_at + max_duration``. ``now`` and ``joined_at`` must be timezone-aware.
    """
    _require_aware(now, "now")
    if facts.joined_at is not None:
        _require_aware(facts.joined_at, "facts.joined_at")
    if not facts.active:
        return Decision()
    best: dict[str, tuple[int, Grant]] = {}
    for rule in policies.rules:
        if rule.tenant != facts.tenant or not _matches(rule.when, facts):
            continue
        measurable, until = _until(rule, facts.joined_at)
        if not measurable or (until is not None and until <= now):
            continue
        for spec in rule.grant:
            roles = policies.role_order(spec.workspace)
            rank = roles.index(spec.role) if spec.role in roles else -1
            candidate = (rank, Grant(workspace=spec.workspace, role=spec.role, rule_id=rule.id, until=until))
            current = best.get(spec.workspace)
            if current is None or _wins(candidate, current):
                best[spec.workspace] = candidate
    return Decision(grants=tuple(grant for _, grant in sorted(best.values(), key=lambda item: item[1].workspace)))


def _matches(when: When, facts: SubjectFacts) -> bool:
    """Whether every condition holds for ``facts``; groups, attribute names and values compare case-insensitively."""
    groups = {group.casefold() for group in facts.groups}
    if when.groups_any is not None and not any(group.casefold() in groups for group in when.groups_any):
        return False
    if when.groups_all is not None and not all(group.casefold() in groups for group in when.groups_all):
        return False
    if when.attributes is not None:
        attributes = {key.casefold(): value.casefold() for key, value in facts.attributes.items()}
        for key, accepted in when.attributes.items():
            value = attributes.get(key.casefold())
            if value is None or value not in {candidate.casefold() for candidate in accepted}:
                return False
    if when.email_verified and not facts.verified_emails:
        return False
    if when.email_domain_any is not None:
        domains = {email.rpartition("@")[2].lower() for email in facts.verified_emails if "@" in email}
        if domains.isdisjoint(when.email_domain_any):
            return False
    return True


def _until(rule: Rule, joined_at: dt.datetime | None) -> tuple[bool, dt.datetime | None]:
    """(measurable, end) of grants from ``rule`` for someone who joined at ``joined_at``; end ``None`` = no end.

    Not measurable when the rule has a ``max_duration`` but the person has no join time: the rule then
    grants nothing (fail closed).
    """
    until = rule.until_instant()
    if rule.max_duration is None:
        return True, until
    if joined_at is None:
        return False, None
    limit = joined_at.astimezone(dt.UTC) + rule.max_duration
    return True, limit if until is None else min(until, limit)


def _wins(candidate: tuple[int, Grant], current: tuple[int, Grant]) -> bool:
    """Higher rank, then later end (``None`` latest), then smaller rule id: a total order, so merging is stable."""
    (rank, grant), (current_rank, current_grant) = candidate, current
    if rank != current_rank:
        return rank > current_rank
    if grant.until != current_grant.until:
        if grant.until is None:
            return True
        if current_grant.until is None:
            return False
        return grant.until > current_grant.until
    return grant.rule_id < current_grant.rule_id


def _require_aware(moment: dt.datetime, what: str) -> None:
    """Naive datetimes would make expiry depend on the host's timezone."""
    if moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


class ChangeKind(StrEnum):
    GAIN = "gain"
    """The person gets a workspace they had no grant for."""
    LOSE = "lose"
    """The person loses their grant for a workspace."""
    CHANGE = "change"
    """Still granted, but the role, the end or the rule responsible differs."""


@dataclass(frozen=True)
class Change:
    """How one workspace's grant differs between two decisions; ``before``/``after`` is ``None`` for gain/lose."""

    kind: ChangeKind
    workspace: str
    before: Grant | None
    after: Grant | None

    @property
    def role_changed(self) -> bool:
        """True when the person's role in the workspace differs (gain and lose count)."""
        return (self.before.role if self.before else None) != (self.after.role if self.after else None)


def diff_decisions(before: Decision, after: Decision) -> list[Change]:
    """What moving from ``before`` to ``after`` changes, one entry per affected workspace, sorted by workspace."""
    old, new = before.by_workspace(), after.by_workspace()
    changes: list[Change] = []
    for workspace in sorted(old.keys() | new.keys()):
        was, now = old.get(workspace), new.get(workspace)
        if was is None:
            changes.append(Change(ChangeKind.GAIN, workspace, None, now))
        elif now is None:
            changes.append(Change(ChangeKind.LOSE, workspace, was, None))
        elif was != now:
            changes.append(Change(ChangeKind.CHANGE, workspace, was, now))
    return changes
