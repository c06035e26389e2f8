"""Policy files -> one validated :class:`PolicySet`, or a :class:`PolicyError` naming file, rule and field.

YAML is read with a ``yaml.SafeLoader`` subclass that also refuses a key repeated in one mapping
(plain ``safe_load`` silently keeps the last, which could widen or narrow access unnoticed).
Each file is validated on its own first; then the set: rule ids unique across files, role orders
declared the same wherever they are declared twice, and every granted role ranked.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode

from broker.errors import BadRequest
from broker.policy.model import PARTIAL, PolicySet, Rule, WorkspaceSpec

__all__ = ["PolicyError", "PolicyProblem", "load_policies", "load_policy_documents"]

PolicySource = str | os.PathLike[str] | Iterable[os.PathLike[str]]


@dataclass(frozen=True)
class PolicyProblem:
    """One reason a policy set was refused; ``rule_id`` / ``field`` are ``None`` when not about one rule or field."""

    source: str
    """The file path, or the name given to text."""
    rule_id: str | None
    """The rule's id as written, or ``#n`` (1-based position in the file) when it has none."""
    field: str | None
    """The field inside the rule (``when.groups_any``, ``grant[1].role``), or inside the file outside any rule."""
    message: str

    def __str__(self) -> str:
        parts = [self.source]
        if self.rule_id is not None:
            parts.append(f"rule {self.rule_id!r}" if not self.rule_id.startswith("#") else f"rule {self.rule_id}")
        if self.field:
            parts.append(self.field)
        return ": ".join([*parts, self.message])


class PolicyError(BadRequest):
    """A policy set that cannot be loaded; the detail lists every problem, one per line.

    ``source``, ``rule_id`` and ``field`` are those of the first problem.
    """

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        if not problems:
            raise ValueError("PolicyError needs at least one problem")
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems: tuple[PolicyProblem, ...] = tuple(problems)
        self.source = problems[0].source
        self.rule_id = problems[0].rule_id
        self.field = problems[0].field


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints here
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: MappingNode) -> dict[Hashable, Any]:
    """Checks key uniqueness before the safe constructor builds the mapping."""
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable):
            if key in seen:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
    mapping: dict[Hashable, Any] = loader.construct_mapping(node, deep=True)
    return mapping


def _construct_checked_timestamp(loader: _UniqueKeyLoader, node: ScalarNode) -> Any:
    """PyYAML raises a bare ValueError for ``2026-13-01``; this one says where."""
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError as exc:
        raise ConstructorError(None, None, f"invalid date {node.value!r} ({exc})", node.start_mark) from exc


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_checked_timestamp)


def load_policies(source: PolicySource, *, name: str = "<text>") -> PolicySet:
    """Load and validate a whole policy set; nothing is returned unless every file and the set are valid.

    ``source`` is YAML text (a ``str``, reported as ``name``), a file or directory path (a directory
    contributes its ``*.yaml``/``*.yml`` files by name, not recursively) or an iterable of such paths.
    Raises :class:`PolicyError`.
    """
    return load_policy_documents(_read(source, name))


def load_policy_documents(documents: Iterable[tuple[str, str]]) -> PolicySet:
    """Like :func:`load_policies` for ``(name, YAML text)`` pairs kept outside files; no documents = deny all."""
    problems: list[PolicyProblem] = []
    parsed: list[tuple[str, PolicySet]] = []
    for doc_name, text in list(documents):
        result = _parse_one(doc_name, text)
        if isinstance(result, PolicySet):
            parsed.append((doc_name, result))
        else:
            problems.extend(result)
    if problems:
        raise PolicyError(problems)
    return _merge(parsed)


def _read(source: PolicySource, name: str) -> list[tuple[str, str]]:
    """The (name, text) of every document, in a stable order."""
    if isinstance(source, str):
        return [(name, source)]
    paths: list[Path] = []
    for item in [source] if isinstance(source, os.PathLike) else source:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
            if not found:
                raise PolicyError([PolicyProblem(str(path), None, None, "directory holds no *.yaml policy file")])
            paths.extend(found)
        else:
            paths.append(path)
    documents: list[tuple[str, str]] = []
    for path in paths:
        try:
            documents.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError([PolicyProblem(str(path), None, None, f"cannot read: {exc}")]) from exc
    return documents


def _parse_one(doc_name: str, text: str) -> PolicySet | list[PolicyProblem]:
    """One document, validated on its own (set-wide role checks wait for the merge)."""
    loader = _UniqueKeyLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return [PolicyProblem(doc_name, None, None, f"not valid YAML{where}: {problem}")]
    finally:
        loader.dispose()
    if data is None:
        return [PolicyProblem(doc_name, None, None, "empty document; write 'rules: []' for a file with no rules")]
    try:
        return PolicySet.model_validate(data, context=PARTIAL)
    except ValidationError as exc:
        return _explain(doc_name, data, exc)


def _explain(doc_name: str, data: Any, exc: ValidationError) -> list[PolicyProblem]:
    """Pydantic errors -> problems naming the rule by id and the field by its path inside the rule."""
    raw_rules: Any = None
    if isinstance(data, list):
        raw_rules = data
    elif isinstance(data, dict):
        raw_rules = data.get("rules") if "rules" in data or not set(data) & set(Rule.model_fields) else [data]
    problems: list[PolicyProblem] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        rule_id: str | None = None
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and isinstance(raw_rules, list):
            index = loc[1]
            raw = raw_rules[index] if index < len(raw_rules) else None
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            rule_id = str(raw_id) if isinstance(raw_id, str) and raw_id else f"#{index + 1}"
            loc = loc[2:]
        problems.append(PolicyProblem(doc_name, rule_id, _field_path(loc) or None, _message(error)))
    return problems


def _field_path(loc: Sequence[int | str]) -> str:
    """``('grant', 1, 'role')`` -> ``grant[1].role``."""
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for an invalid mapping key: the key is already in the path
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(error: Any) -> str:
    """Pydantic's message, with the wording a policy author needs for the common cases."""
    kind = error["type"]
    if kind == "model_type" and not error["loc"]:
        return "a policy file holds one rule, a list of rules, or a mapping with 'rules' (and 'roles', 'workspaces')"
    if kind == "literal_error" and error["loc"][-1:] == ("active",):
        return "only 'true' is allowed: inactive people never match any rule"
    if kind == "extra_forbidden":
        return "unknown key (typo?): unknown keys are refused so that they cannot change access silently"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _merge(parsed: list[tuple[str, PolicySet]]) -> PolicySet:
    """One set from validated files: ids unique, role orders agreed, every granted role ranked."""
    problems: list[PolicyProblem] = []
    rule_sources: list[str] = []
    rules: list[Rule] = []
    defined_in: dict[str, str] = {}
    roles: list[str] | None = None
    roles_from = ""
    workspaces: dict[str, WorkspaceSpec] = {}
    workspace_from: dict[str, str] = {}
    for doc_name, doc in parsed:
        if doc.roles is not None:
            if roles is None:
                roles, roles_from = list(doc.roles), doc_name
            elif list(doc.roles) != roles:
                problems.append(
                    PolicyProblem(doc_name, None, "roles", f"differs from the role order declared in {roles_from}")
                )
        for slug, spec in doc.workspaces.items():
            if slug not in workspaces:
                workspaces[slug], workspace_from[slug] = spec, doc_name
            elif spec.roles != workspaces[slug].roles:
                problems.append(
                    PolicyProblem(
                        doc_name,
                        None,
                        f"workspaces.{slug}.roles",
                        f"differs from the role order declared in {workspace_from[slug]}",
                    )
                )
        for rule in doc.rules:
            if rule.id in defined_in:
                problems.append(
                    PolicyProblem(doc_name, rule.id, "id", f"rule id is already used in {defined_in[rule.id]}")
                )
                continue
            defined_in[rule.id] = doc_name
            rules.append(rule)
            rule_sources.append(doc_name)
    if problems:
        raise PolicyError(problems)
    candidate = PolicySet.model_construct(roles=roles, workspaces=workspaces, rules=rules)
    unranked = candidate.role_problems()
    if unranked:
        raise PolicyError(
            [
                PolicyProblem(
                    rule_sources[problem.rule_index],
                    rules[problem.rule_index].id,
                    f"grant[{problem.grant_index}].role",
                    problem.detail,
                )
                for problem in unranked
            ]
        )
    return PolicySet.model_validate({"roles": roles, "workspaces": workspaces, "rules": rules})
