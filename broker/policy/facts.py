"""What the evaluator sees about one person and what it decides: the only types crossing into the engine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Decision", "Grant", "SubjectFacts"]


@dataclass(frozen=True)
class SubjectFacts:
    """One partner person as the policies may test them, taken from the partner's SCIM feed."""

    tenant: str
    """The partner's slug (policies name partners by slug)."""
    subject_id: str
    """The person's SCIM User id in that partner's tenant."""
    active: bool
    user_name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    """Display names of the partner groups the person belongs to, directly or through nesting."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Flat SCIM attributes by path (``title``, ``userType``, ``department``, ``name.familyName`` …)."""
    verified_emails: frozenset[str] = field(default_factory=frozenset)
    """Lower-cased emails whose domain is one of the partner's verified domains; never any other email."""
    joined_at: dt.datetime | None = None
    """When the person first became active, for rules with a maximum duration."""


@dataclass(frozen=True)
class Grant:
    """Access to one workspace with one role, made by one rule, possibly until a moment."""

    workspace: str
    """The workspace slug."""
    role: str
    rule_id: str
    """The id of the rule that made this grant, kept for audit and reports."""
    until: dt.datetime | None = None
    """When the grant ends by itself (aware UTC); ``None`` = while the rule still matches."""


@dataclass(frozen=True)
class Decision:
    """Every grant one person gets; empty means no access anywhere (default deny).

    At most one grant per workspace: when several rules grant the same workspace, the evaluator keeps
    the highest role by the policy's role order, ties broken by the latest ``until``.
    """

    grants: tuple[Grant, ...] = ()

    def by_workspace(self) -> dict[str, Grant]:
        return {grant.workspace: grant for grant in self.grants}
