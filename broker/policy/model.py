"""Policy documents: the one pydantic model that ``policies/schema.json`` is generated from.

A policy file is one of three shapes, all read into a :class:`PolicySet`:

    - one rule                      (a mapping with ``id``, ``tenant``, ``when``, ``grant`` …)
    - a list of rules
    - ``{roles?, workspaces?, rules}``  (the full form; the only one that can declare role orders)

Every model forbids unknown keys, so a typo is a load error instead of a silent change of access.
Regenerate the schema with ``python -m broker.policy.model``; ``--check`` exits 1 when it has drifted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    SerializationInfo,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import core_schema as cs

__all__ = [
    "DEFAULT_ROLES",
    "PARTIAL",
    "SCHEMA_PATH",
    "GrantSpec",
    "PolicySet",
    "RoleProblem",
    "Rule",
    "When",
    "WorkspaceSpec",
    "main",
    "parse_duration",
    "schema_json",
]

DEFAULT_ROLES: tuple[str, ...] = ("viewer", "member", "admin")
"""The role order, lowest first, for workspaces whose policy set declares none."""

PARTIAL: dict[str, bool] = {"partial": True}
"""Validation context for one file of several: set-wide checks (unique ids, role orders) wait for the merge."""

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "policies" / "schema.json"
"""Where the generated schema is committed."""

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
ROLE_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$"
ATTRIBUTE_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z][A-Za-z0-9_-]*)?$"
DOMAIN_PATTERN = r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
DURATION_PATTERN = (
    r"^(?:P(?:(?P<weeks>\d+)W|(?=\d|T\d)(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?)"
    r"|(?P<short>\d+)(?P<unit>[wdh]))$"
)
_SHORT_UNITS = {"w": "weeks", "d": "days", "h": "hours"}


def _matcher(pattern: str, what: str) -> Any:
    """A validator with a message that says what was expected, not which regex failed."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _unique(values: list[str]) -> list[str]:
    """A repeated role in an order would make the order ambiguous."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} appears twice")
        seen.add(value)
    return values


def parse_duration(value: Any) -> dt.timedelta:
    """ISO 8601 ``PnW`` / ``PnDTnHnMnS`` or ``90d`` / ``2w`` / ``12h``; years and months have no fixed length."""
    if isinstance(value, dt.timedelta):
        duration = value
    elif not isinstance(value, str):
        raise ValueError("a duration is a string such as 'P90D', 'PT12H', '90d', '2w' or '12h'")
    else:
        match = re.fullmatch(DURATION_PATTERN, value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration: use ISO 8601 'PnW' or 'PnDTnHnMnS' (no years or months) "
                "or '90d', '2w', '12h'"
            )
        parts = match.groupdict()
        if parts["short"] is not None:
            duration = dt.timedelta(**{_SHORT_UNITS[parts["unit"]]: int(parts["short"])})
        else:
            duration = dt.timedelta(
                **{unit: int(parts[unit] or 0) for unit in ("weeks", "days", "hours", "minutes", "seconds")}
            )
    if duration <= dt.timedelta(0):
        raise ValueError("a duration must be longer than zero")
    return duration


def _until(value: Any) -> dt.datetime | dt.date:
    """A date, or a date-time with an offset (stored in UTC): one without would depend on the reader's clock."""
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value) if len(value) == 10 else dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date ('2026-12-31') or date-time ('2026-12-31T18:00:00Z')") from None
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            raise ValueError("a date-time needs an offset, e.g. '2026-12-31T18:00:00Z'")
        return value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return value
    raise ValueError("until is a date ('2026-12-31') or a date-time with an offset ('2026-12-31T18:00:00Z')")


def _until_out(value: dt.datetime | dt.date, info: SerializationInfo) -> dt.datetime | dt.date | str:
    """Keeps the date or date-time as written (ISO 8601 in JSON), which a union serializer would warn about."""
    return value.isoformat() if info.mode_is_json() else value


def _as_list(value: Any) -> Any:
    """One accepted value may be written without brackets."""
    return value if isinstance(value, list) else [value]


Slug = Annotated[
    str,
    _matcher(SLUG_PATTERN, "a slug (1-64 lower-case letters, digits or inner hyphens)"),
    WithJsonSchema({"type": "string", "pattern": SLUG_PATTERN}),
]
RoleName = Annotated[
    str,
    _matcher(ROLE_PATTERN, "a role name (1-64 lower-case letters, digits, inner hyphens or underscores)"),
    WithJsonSchema({"type": "string", "pattern": ROLE_PATTERN}),
]
AttributePath = Annotated[
    str,
    _matcher(ATTRIBUTE_PATTERN, "a SCIM attribute path ('title', 'userType', 'name.familyName')"),
    WithJsonSchema({"type": "string", "pattern": ATTRIBUTE_PATTERN}),
]
Domain = Annotated[
    str,
    _matcher(DOMAIN_PATTERN, "a lower-case DNS domain such as 'example.com'"),
    WithJsonSchema({"type": "string", "pattern": DOMAIN_PATTERN}),
]
Duration = Annotated[
    dt.timedelta,
    BeforeValidator(parse_duration),
    WithJsonSchema({"type": "string", "pattern": re.sub(r"\(\?P<\w+>", "(?:", DURATION_PATTERN)}),
]
Until = Annotated[
    dt.datetime | dt.date,
    PlainValidator(_until),
    PlainSerializer(_until_out),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}),
]
GroupName = Annotated[str, Field(min_length=1)]
AttributeValues = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    BeforeValidator(_as_list),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        }
    ),
]
RoleOrder = Annotated[
    list[RoleName], Field(min_length=1, json_schema_extra={"uniqueItems": True}), AfterValidator(_unique)
]

_FORBID = ConfigDict(extra="forbid", frozen=True)


class When(BaseModel):
    """Conditions on one partner person; all that are given must hold, and only active people ever match."""

    model_config = _FORBID

    active: Literal[True] = Field(
        default=True,
        description="Always true: inactive people never match any rule. Written only for emphasis.",
    )
    groups_any: Annotated[list[GroupName], Field(min_length=1)] | None = Field(
        default=None,
        description="The person is in at least one of these partner groups (display names, case-insensitive).",
    )
    groups_all: Annotated[list[GroupName], Field(min_length=1)] | None = Field(
        default=None,
        description="The person is in every one of these partner groups (display names, case-insensitive).",
    )
    attributes: (
        Annotated[
            dict[AttributePath, AttributeValues],
            Field(min_length=1, json_schema_extra={"additionalProperties": False}),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "SCIM attribute path -> required value, or a list of accepted values; compared case-insensitively "
            "(RFC 7643 §2.4 caseExact default). A person without the attribute does not match."
        ),
    )
    email_domain_any: Annotated[list[Domain], Field(min_length=1)] | None = Field(
        default=None,
        description=(
            "The person has a verified email in one of these domains (exact domain, subdomains are not included). "
            "Unverified emails never reach the evaluator, so they can never match."
        ),
    )
    email_verified: Literal[True] | None = Field(
        default=None,
        description="True: the person has at least one verified email. Only true is accepted.",
    )

    @model_validator(mode="after")
    def _attribute_keys_distinct(self) -> When:
        """SCIM attribute names are case-insensitive, so 'title' and 'Title' would be one condition twice."""
        keys = [key.lower() for key in self.attributes or {}]
        if len(keys) != len(set(keys)):
            raise ValueError("attributes names the same attribute twice (names are case-insensitive)")
        return self


class GrantSpec(BaseModel):
    """One workspace and the role a matching person gets in it."""

    model_config = _FORBID

    workspace: Slug = Field(description="The shared workspace slug.")
    role: RoleName = Field(description="The role in that workspace; must appear in the workspace's role order.")


class Rule(BaseModel):
    """Which partner's people (by group, attribute or verified email) get which workspaces and roles, until when."""

    model_config = _FORBID

    id: Slug = Field(description="Unique across the whole policy set; every grant carries it for audit and reports.")
    tenant: Slug = Field(description="The partner's slug; a rule never matches another partner's people.")
    description: str | None = Field(default=None, description="Why this rule exists, for reviewers.")
    when: When = Field(
        description="Conditions that must all hold. '{}' matches every active person of the partner.",
    )
    grant: Annotated[list[GrantSpec], Field(min_length=1)] = Field(
        description="The workspaces and roles given; one entry per workspace.",
    )
    until: Until | None = Field(
        default=None,
        description=(
            "When the grant ends. A date means through the end of that day, UTC (ends at the next midnight UTC); "
            "a date-time needs an offset."
        ),
    )
    max_duration: Duration | None = Field(
        default=None,
        description=(
            "How long after the person joined (first became active) the grant ends: ISO 8601 'P90D', 'PT12H', 'P2W' "
            "or '90d', '2w', '12h'. A person with no join time gets nothing from such a rule."
        ),
    )

    inactive_after: Duration | None = Field(
        default=None,
        description=(
            "For the stale-access report: the partner's people count as inactive after this long with neither a "
            "login nor a SCIM change ('90d', 'P12W'). The shortest of a partner's rules applies to the partner; "
            "unset everywhere: the report's default (ENTENTE_REPORT_INACTIVE_DAYS or --inactive-days)."
        ),
    )

    @model_validator(mode="after")
    def _one_grant_per_workspace(self) -> Rule:
        """Two roles for one workspace in one rule would have no author-visible winner."""
        seen: set[str] = set()
        for spec in self.grant:
            if spec.workspace in seen:
                raise ValueError(f"grant names workspace {spec.workspace!r} twice")
            seen.add(spec.workspace)
        return self

    def until_instant(self) -> dt.datetime | None:
        """``until`` as an aware UTC instant (a date ends at the following midnight UTC); ``None`` = no end date."""
        if self.until is None:
            return None
        if isinstance(self.until, dt.datetime):
            return self.until
        return dt.datetime.combine(self.until + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


class WorkspaceSpec(BaseModel):
    """What the policy set says about one workspace beyond its grants."""

    model_config = _FORBID

    roles: RoleOrder = Field(description="This workspace's roles, lowest first; overrides the set-wide order.")
    description: str | None = Field(default=None, description="What the workspace is, for reviewers.")


@dataclass(frozen=True)
class RoleProblem:
    """A granted role that the applicable role order does not rank."""

    rule_index: int
    grant_index: int
    rule_id: str
    detail: str
    """What is wrong, without the rule id."""

    @property
    def message(self) -> str:
        return f"rule {self.rule_id!r}: grant[{self.grant_index}].role: {self.detail}"


class PolicySet(BaseModel):
    """Entente access policies: rules granting partner people shared workspaces. No rule, no access."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Entente policy document")

    roles: RoleOrder | None = Field(
        default=None,
        description=(
            "Role order for every workspace without its own, lowest first; when several rules grant one workspace "
            "the highest role wins. Omitted: [viewer, member, admin]."
        ),
    )
    workspaces: dict[Slug, WorkspaceSpec] = Field(
        default_factory=dict,
        description="Per-workspace settings, by workspace slug.",
        json_schema_extra={"additionalProperties": False},
    )
    rules: list[Rule] = Field(description="The rules; an empty list grants nothing (default deny).")

    @model_validator(mode="before")
    @classmethod
    def _accept_short_forms(cls, data: Any) -> Any:
        """A file may hold one rule or a list of rules instead of the full mapping."""
        if isinstance(data, list):
            return {"rules": data}
        if isinstance(data, dict) and "rules" not in data and set(data) & set(Rule.model_fields):
            return {"rules": [data]}
        return data

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> PolicySet:
        """Rule ids must be unique and every granted role ranked, so that merging is never a guess.

        With the ``PARTIAL`` context (one file of several) both checks are left to the loader's merge.
        """
        if (info.context or {}).get("partial"):
            return self
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        if problems := self.role_problems():
            raise ValueError("; ".join(problem.message for problem in problems))
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: cs.CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        """The schema accepts all three file shapes, as the loader does."""
        full = dict(handler.resolve_ref_schema(handler(core_schema)))
        rule_ref = full["properties"]["rules"]["items"]
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": full.pop("title"),
            "description": full.pop("description"),
            "anyOf": [full, rule_ref, {"type": "array", "items": rule_ref}],
        }

    def role_order(self, workspace: str) -> tuple[str, ...]:
        """The role order for a workspace, lowest first: its own, else the set-wide one, else the default."""
        spec = self.workspaces.get(workspace)
        if spec is not None:
            return tuple(spec.roles)
        return tuple(self.roles) if self.roles is not None else DEFAULT_ROLES

    def role_problems(self) -> list[RoleProblem]:
        """Every granted role missing from its workspace's order; empty when the set can be evaluated."""
        problems: list[RoleProblem] = []
        for rule_index, rule in enumerate(self.rules):
            for grant_index, spec in enumerate(rule.grant):
                order = self.role_order(spec.workspace)
                if spec.role not in order:
                    problems.append(
                        RoleProblem(
                            rule_index,
                            grant_index,
                            rule.id,
                            f"role {spec.role!r} is not in the role order for workspace "
                            f"{spec.workspace!r} ({', '.join(order)}); declare it under 'roles' or "
                            f"'workspaces.{spec.workspace}.roles'",
                        )
                    )
        return problems


def schema_json() -> str:
    """The committed form of the schema: sorted keys, two-space indent, trailing newline, so diffs are stable."""
    return json.dumps(PolicySet.model_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``policies/schema.json``, or with ``--check`` report whether it has drifted from the model."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = schema_json()
    if args == ["--check"]:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is out of date: run python -m broker.policy.model", file=sys.stderr)
            return 1
        return 0
    if args:
        print("usage: python -m broker.policy.model [--check]", file=sys.stderr)
        return 2
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
