"""RFC 7644 §3.4.2.2 filters and §3.4.2.3 sortBy, executed in SQL.

scim2-filter-parser gives the grammar (lexer + parser -> AST). Its own SQL transpiler is not used:
it matches attribute names case-sensitively and silently drops attributes it has no column for,
which turns ``userName eq "a" and titel eq "x"`` into a broader query. Here every attribute path is
resolved against an explicit catalogue, case-insensitively; anything unresolvable, mistyped or
unsupported is ``400 invalidFilter`` with the reason, so a filter can never widen.

Multi-valued attributes and memberships become non-correlated ``pk IN (subquery)`` predicates,
scoped to the partner, so "any value matches" holds per attribute (RFC 7644 §3.4.2.2) and both
databases answer from the value index.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from scim2_filter_parser import ast
from scim2_filter_parser.lexer import SCIMLexer
from scim2_filter_parser.parser import SCIMParser
from sqlalchemy import ColumnElement, and_, bindparam, false, func, not_, or_, select, true
from sqlalchemy.sql.elements import KeyedColumnElement

from broker.errors import InvalidFilter, InvalidValue
from broker.scim.models import GroupMember, ScimGroup, ScimUser, ScimValue
from broker.scim.normalize import CORE_GROUP, CORE_USER, ENTERPRISE
from broker.scim.resources import MULTI_VALUED, fold, unstorable

__all__ = [
    "Equality",
    "ResourceKind",
    "build_filter",
    "equality",
    "equality_predicate",
    "member_filter",
    "parse_filter",
    "sort_key",
]

ResourceKind = Literal["User", "Group"]
AttrType = Literal["string", "boolean", "dateTime", "reference", "binary"]
_MAX_NODES = 200


class _Quoted(str):
    """A filter literal that was a JSON string."""


class _Bare(str):
    """A filter literal that was ``true``, ``false``, ``null`` or a number."""


@dataclass(frozen=True)
class _Scalar:
    column: KeyedColumnElement[Any]
    type: AttrType = "string"
    case_exact: bool = False
    folded: KeyedColumnElement[Any] | None = None  #: precomputed fold(column), indexed for comparisons


@dataclass(frozen=True)
class _Complex:
    """A single-valued complex attribute (``name``, enterprise ``manager``): only ``pr`` applies."""

    subs: tuple[_Scalar, ...]


@dataclass(frozen=True)
class _Multi:
    """A multi-valued user attribute kept in ``scim_value``."""

    attribute: str


@dataclass(frozen=True)
class _Membership:
    """``User.groups`` or ``Group.members``, kept in ``group_member``."""

    side: Literal["groups", "members"]


_Target = _Scalar | _Complex | _Multi | _Membership


def _name_scalars() -> dict[str, _Scalar]:
    return {
        "formatted": _Scalar(ScimUser.name_formatted),  # type: ignore[arg-type]
        "familyname": _Scalar(ScimUser.name_family_name),  # type: ignore[arg-type]
        "givenname": _Scalar(ScimUser.name_given_name),  # type: ignore[arg-type]
        "middlename": _Scalar(ScimUser.name_middle_name),  # type: ignore[arg-type]
        "honorificprefix": _Scalar(ScimUser.name_honorific_prefix),  # type: ignore[arg-type]
        "honorificsuffix": _Scalar(ScimUser.name_honorific_suffix),  # type: ignore[arg-type]
    }


def _user_catalogue() -> dict[str, _Target]:
    c: dict[str, _Target] = {
        "id": _Scalar(ScimUser.id, case_exact=True),  # type: ignore[arg-type]
        "externalid": _Scalar(ScimUser.external_id, case_exact=True),  # type: ignore[arg-type]
        "username": _Scalar(ScimUser.user_name, folded=ScimUser.user_name_ci),  # type: ignore[arg-type]
        "displayname": _Scalar(ScimUser.display_name),  # type: ignore[arg-type]
        "nickname": _Scalar(ScimUser.nick_name),  # type: ignore[arg-type]
        "title": _Scalar(ScimUser.title),  # type: ignore[arg-type]
        "usertype": _Scalar(ScimUser.user_type),  # type: ignore[arg-type]
        "preferredlanguage": _Scalar(ScimUser.preferred_language),  # type: ignore[arg-type]
        "locale": _Scalar(ScimUser.locale),  # type: ignore[arg-type]
        "timezone": _Scalar(ScimUser.timezone),  # type: ignore[arg-type]
        "profileurl": _Scalar(ScimUser.profile_url, "reference", case_exact=True),  # type: ignore[arg-type]
        "active": _Scalar(ScimUser.active, "boolean"),  # type: ignore[arg-type]
        "meta.created": _Scalar(ScimUser.created_at, "dateTime"),  # type: ignore[arg-type]
        "meta.lastmodified": _Scalar(ScimUser.updated_at, "dateTime"),  # type: ignore[arg-type]
        "groups": _Membership("groups"),
    }
    names = _name_scalars()
    c.update({f"name.{k}": v for k, v in names.items()})
    c["name"] = _Complex(tuple(names.values()))
    for attribute in MULTI_VALUED:
        c[attribute.lower()] = _Multi(attribute)
    enterprise = {
        "employeenumber": _Scalar(ScimUser.employee_number),  # type: ignore[arg-type]
        "costcenter": _Scalar(ScimUser.cost_center),  # type: ignore[arg-type]
        "organization": _Scalar(ScimUser.organization),  # type: ignore[arg-type]
        "division": _Scalar(ScimUser.division),  # type: ignore[arg-type]
        "department": _Scalar(ScimUser.department),  # type: ignore[arg-type]
        "manager.value": _Scalar(ScimUser.manager_id, case_exact=True),  # type: ignore[arg-type]
    }
    c.update({f"{ENTERPRISE.lower()}:{k}": v for k, v in enterprise.items()})
    c[f"{ENTERPRISE.lower()}:manager"] = _Complex((enterprise["manager.value"],))  # type: ignore[arg-type]
    return c


def _group_catalogue() -> dict[str, _Target]:
    return {
        "id": _Scalar(ScimGroup.id, case_exact=True),  # type: ignore[arg-type]
        "externalid": _Scalar(ScimGroup.external_id, case_exact=True),  # type: ignore[arg-type]
        "displayname": _Scalar(ScimGroup.display_name, folded=ScimGroup.display_name_ci),  # type: ignore[arg-type]
        "meta.created": _Scalar(ScimGroup.created_at, "dateTime"),  # type: ignore[arg-type]
        "meta.lastmodified": _Scalar(ScimGroup.updated_at, "dateTime"),  # type: ignore[arg-type]
        "members": _Membership("members"),
    }


_CATALOGUES: dict[ResourceKind, dict[str, _Target]] = {"User": _user_catalogue(), "Group": _group_catalogue()}
_CORE = {"User": CORE_USER.lower(), "Group": CORE_GROUP.lower()}

# Sub-attributes of multi-valued values, as columns of a scim_value row.
_VALUE_SUBS: dict[str, tuple[str, AttrType, bool]] = {
    "value": ("value", "string", False),
    "type": ("type", "string", False),
    "primary": ("primary", "boolean", False),
    "display": ("display", "string", False),
}
_ADDRESS_SUBS: dict[str, tuple[str, AttrType, bool]] = {
    "formatted": ("value", "string", False),
    "type": ("type", "string", False),
    "primary": ("primary", "boolean", False),
}


def _tokens(text: str) -> Iterator[Any]:
    """Lex, keeping whether a literal was quoted (the AST alone cannot tell ``"true"`` from ``true``)."""
    for token in SCIMLexer().tokenize(text):
        if token.type == "COMP_VALUE":
            try:
                token.value = _Quoted(json.loads(f'"{token.value}"'))
            except ValueError as exc:
                raise InvalidFilter(f"invalid string literal {token.value!r} in filter") from exc
            if unstorable(token.value):  # an escaped \u0000 or lone surrogate: no value can equal it
                raise InvalidFilter(f"string literal {token.value!r} holds U+0000 or an unpaired surrogate")
        elif token.type in ("TRUE", "FALSE", "NULL", "NUMBER"):
            token.value = _Bare(token.value)
        yield token


def _count(node: Any) -> int:
    if isinstance(node, ast.AST):
        return 1 + sum(_count(getattr(node, f, None)) for f in node._fields)
    return 0


def parse_filter(text: str, *, max_length: int = 4096) -> ast.Filter:
    """Parse a filter; every failure is InvalidFilter naming the problem, never an internal error."""
    if not text or not text.strip():
        raise InvalidFilter("empty filter")
    if len(text) > max_length:
        raise InvalidFilter(f"filter longer than {max_length} characters")
    try:
        tree = SCIMParser().parse(_tokens(text))
    except InvalidFilter:
        raise
    except Exception as exc:  # sly raises ValueError, its own errors, even IndexError on long inputs
        reason = str(exc) or type(exc).__name__
        raise InvalidFilter(f"cannot parse filter {text!r}: {reason}") from exc
    if tree is None:
        raise InvalidFilter(f"cannot parse filter {text!r}")
    try:
        nodes = _count(tree)
    except RecursionError as exc:  # thousands of nested parentheses still fit in max_length
        raise InvalidFilter("filter is nested too deeply") from exc
    if nodes > _MAX_NODES:
        raise InvalidFilter(f"filter has more than {_MAX_NODES} nodes")
    return _precedence(tree)


def _chained(node: Any) -> bool:
    """An unparenthesised ``x and/or y``: the parser wraps a parenthesised one in one more Filter."""
    return (
        isinstance(node, ast.Filter)
        and isinstance(node.expr, ast.LogExpr)
        and not node.negated
        and node.namespace is None
    )


def _precedence(node: Any) -> Any:
    """Rebuild each unparenthesised and/or chain so ``and`` binds tighter than ``or`` (RFC 7644 §3.4.2.2).

    scim2-filter-parser 0.7.0 declares ``and`` and ``or`` at one precedence level, so
    ``a or b and c`` parses as ``(a or b) and c``, which answers a different question.
    """
    if not isinstance(node, ast.AST):
        return node
    if not _chained(node):
        for name in node._fields:
            setattr(node, name, _precedence(getattr(node, name)))
        return node
    operands: list[Any] = []
    operators: list[str] = []

    def flatten(item: Any) -> None:
        if _chained(item):
            flatten(item.expr.expr1)
            operators.append(str(item.expr.op).lower())
            flatten(item.expr.expr2)
        else:
            operands.append(_precedence(item))

    flatten(node)

    def join(op: str, items: list[Any]) -> Any:
        result = items[0]
        for item in items[1:]:
            result = ast.Filter(ast.LogExpr(op, result, item), False, None)
        return result

    terms: list[list[Any]] = [[operands[0]]]
    for operator, operand in zip(operators, operands[1:], strict=True):
        if operator == "and":
            terms[-1].append(operand)
        else:
            terms.append([operand])
    return join("or", [join("and", term) for term in terms])


class _Builder:
    """Turns one parsed filter into one SQL predicate for one partner's resources."""

    def __init__(self, kind: ResourceKind, partner_id: str, *, root: bool = False) -> None:
        self.kind = kind
        self.partner_id = partner_id
        self.catalogue = _CATALOGUES[kind]
        self.root = root

    def absent(self, path: ast.AttrPath) -> bool:
        """Whether, at the root endpoint, ``path`` is an attribute of the other resource type only.

        RFC 7644 §3.4.2.2: "For filtered attributes that are not part of a particular resource type,
        the service provider SHALL treat the attribute as if there is no attribute value", so
        ``displayName co "x" or userName co "x"`` still finds Groups. An attribute neither type has
        stays 400 invalidFilter, so a typo never widens a search.
        """
        if not self.root:
            return False
        try:
            self.resolve(path)
            return False
        except InvalidFilter:
            pass
        try:
            _Builder("Group" if self.kind == "User" else "User", self.partner_id).resolve(path)
        except InvalidFilter:
            return False
        return True

    # -- attribute resolution -------------------------------------------------------------
    def resolve(self, path: ast.AttrPath) -> tuple[_Target, str | None, str]:
        """(target, sub-attribute or None, printable name) for an attribute path, or InvalidFilter."""
        name = str(path.attr_name)
        sub = path.sub_attr.value if path.sub_attr is not None else None
        uri = path.uri.lower() if path.uri else None
        printable = ".".join(p for p in (f"{path.uri}:{name}" if path.uri else name, sub) if p)
        key = name.lower()
        candidates: list[str] = []
        if uri is None or uri == _CORE[self.kind]:
            candidates = [key]
            if self.kind == "User" and uri is None:
                candidates.append(f"{ENTERPRISE.lower()}:{key}")
        elif self.kind == "User" and uri == ENTERPRISE.lower():
            candidates = [f"{ENTERPRISE.lower()}:{key}"]
        else:
            raise InvalidFilter(f"unknown schema '{path.uri}' in filter attribute '{printable}'")
        for candidate in candidates:
            if sub is not None and f"{candidate}.{sub.lower()}" in self.catalogue:
                return self.catalogue[f"{candidate}.{sub.lower()}"], None, printable
            if candidate in self.catalogue:
                target = self.catalogue[candidate]
                if sub is not None and not isinstance(target, _Multi | _Membership):
                    break
                return target, sub, printable
        raise InvalidFilter(f"unknown or unfilterable attribute '{printable}' for {self.kind}")

    # -- tree walk ------------------------------------------------------------------------
    def build(self, node: Any) -> ColumnElement[bool]:
        if isinstance(node, ast.Filter):
            if node.namespace is not None:
                predicate = self.value_path(node.namespace, node.expr, None)
            else:
                predicate = self.build(node.expr)
            return not_(predicate) if node.negated else predicate
        if isinstance(node, ast.LogExpr):
            left, right = self.build(node.expr1), self.build(node.expr2)
            return and_(left, right) if node.op.lower() == "and" else or_(left, right)
        if isinstance(node, ast.AttrExpr):
            return self.attr_expr(node)
        raise InvalidFilter(f"unsupported filter element {type(node).__name__}")

    def attr_expr(self, node: ast.AttrExpr) -> ColumnElement[bool]:
        op = str(node.value).lower()
        literal = node.comp_value.value if node.comp_value is not None else None
        path = node.attr_path
        if isinstance(path.attr_name, ast.Filter):
            # Entra's `emails[type eq "work"].value eq "x"`: a value path followed by a sub-attribute.
            inner = path.attr_name
            namespace = inner.namespace
            if namespace is None or namespace.sub_attr is None:
                raise InvalidFilter("a value filter must be followed by a sub-attribute")
            sub = namespace.sub_attr.value
            bare = ast.AttrPath(namespace.attr_name, None, namespace.uri)
            predicate = self.value_path(bare, inner.expr, (sub, op, literal))
            return not_(predicate) if inner.negated else predicate
        if self.absent(path):
            return true() if op == "ne" else false()  # no value: only `ne` holds, as for NULL columns
        target, sub, printable = self.resolve(path)
        if isinstance(target, _Scalar):
            return _compare(target, op, literal, printable)
        if isinstance(target, _Complex):
            if op != "pr":
                raise InvalidFilter(f"'{printable}' is complex: only 'pr' applies, or name a sub-attribute")
            return or_(*(_compare(s, "pr", None, printable) for s in target.subs))
        return self.value_path(path, None, (sub or "value", op, literal))

    def value_path(self, path: ast.AttrPath, inner: Any, last: tuple[str, str, Any] | None) -> ColumnElement[bool]:
        """``attr[inner]`` and/or ``attr.sub op literal``, true when one value satisfies all of it."""
        if self.absent(path):
            return false()  # no values, so none satisfies it
        target, sub, printable = self.resolve(path)
        if sub is not None and last is None:
            raise InvalidFilter(f"'{printable}': a sub-attribute goes after the ']'")
        if isinstance(target, _Multi):
            return self.multi(target, inner, last, printable)
        if isinstance(target, _Membership):
            return self.membership(target, inner, last, printable)
        raise InvalidFilter(f"'{printable}' is not multi-valued: '[...]' does not apply")

    def row_predicate(
        self,
        subs: Callable[[str, str], _Scalar],
        inner: Any,
        last: tuple[str, str, Any] | None,
        printable: str,
    ) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = []
        if inner is not None:
            parts.append(self.row_tree(subs, inner, printable))
        if last is not None:
            sub, op, literal = last
            parts.append(_compare(subs(sub, printable), op, literal, f"{printable}.{sub}"))
        return and_(*parts) if parts else true()

    def row_tree(self, subs: Callable[[str, str], _Scalar], node: Any, printable: str) -> ColumnElement[bool]:
        if isinstance(node, ast.Filter):
            if node.namespace is not None:
                raise InvalidFilter(f"nested '[...]' inside '{printable}[...]'")
            predicate = self.row_tree(subs, node.expr, printable)
            return not_(predicate) if node.negated else predicate
        if isinstance(node, ast.LogExpr):
            left, right = (
                self.row_tree(subs, node.expr1, printable),
                self.row_tree(subs, node.expr2, printable),
            )
            return and_(left, right) if node.op.lower() == "and" else or_(left, right)
        if isinstance(node, ast.AttrExpr):
            path = node.attr_path
            if isinstance(path.attr_name, ast.Filter) or path.uri or path.sub_attr is not None:
                raise InvalidFilter(f"inside '{printable}[...]' only its sub-attributes can be compared")
            literal = node.comp_value.value if node.comp_value is not None else None
            return _compare(
                subs(str(path.attr_name), printable),
                str(node.value).lower(),
                literal,
                f"{printable}.{path.attr_name}",
            )
        raise InvalidFilter(f"unsupported filter element {type(node).__name__}")

    def multi(
        self, target: _Multi, inner: Any, last: tuple[str, str, Any] | None, printable: str
    ) -> ColumnElement[bool]:
        table = {"addresses": _ADDRESS_SUBS}.get(target.attribute, _VALUE_SUBS)

        def subs(name: str, where: str) -> _Scalar:
            spec = table.get(name.lower())
            if spec is None:
                raise InvalidFilter(f"'{where}' has no filterable sub-attribute '{name}'")
            column_name, type_, exact = spec
            column = getattr(ScimValue, column_name)
            folded = ScimValue.value_ci if column_name == "value" else None
            return _Scalar(column, type_, exact, folded)  # type: ignore[arg-type]

        predicate = self.row_predicate(subs, inner, last, printable)
        rows = select(ScimValue.user_pk).where(
            ScimValue.partner_id == self.partner_id, ScimValue.attribute == target.attribute, predicate
        )
        return ScimUser.pk.in_(rows)  # type: ignore[union-attr]

    def membership(
        self, target: _Membership, inner: Any, last: tuple[str, str, Any] | None, printable: str
    ) -> ColumnElement[bool]:
        columns = _membership_columns(target.side)

        def subs(name: str, where: str) -> _Scalar:
            if name.lower() not in columns:
                raise InvalidFilter(f"'{where}' has no filterable sub-attribute '{name}'")
            return columns[name.lower()]

        predicate = self.row_predicate(subs, inner, last, printable)
        if target.side == "groups":
            rows = (
                select(GroupMember.member_id)
                .join(ScimGroup, ScimGroup.pk == GroupMember.group_pk)  # type: ignore[arg-type]
                .where(GroupMember.partner_id == self.partner_id, predicate)
            )
            return ScimUser.id.in_(rows)  # type: ignore[attr-defined]
        rows = select(GroupMember.group_pk).where(GroupMember.partner_id == self.partner_id, predicate)
        return ScimGroup.pk.in_(rows)  # type: ignore[union-attr]


def _membership_columns(side: Literal["groups", "members"]) -> dict[str, _Scalar]:
    """Filterable sub-attributes of ``User.groups`` (the group row) or ``Group.members`` (the member row)."""
    if side == "groups":
        return {
            "value": _Scalar(ScimGroup.id, case_exact=True),  # type: ignore[arg-type]
            "display": _Scalar(ScimGroup.display_name, folded=ScimGroup.display_name_ci),  # type: ignore[arg-type]
        }
    return {
        "value": _Scalar(GroupMember.member_id, case_exact=True),  # type: ignore[arg-type]
        "type": _Scalar(GroupMember.member_type),  # type: ignore[arg-type]
    }


def member_filter(text: str, *, max_length: int = 4096) -> ColumnElement[bool]:
    """Predicate over ``group_member`` rows for a PATCH path ``members[<text>]`` (RFC 7644 §3.5.2)."""
    tree = parse_filter(text, max_length=max_length)
    columns = _membership_columns("members")

    def subs(name: str, where: str) -> _Scalar:
        if name.lower() not in columns:
            raise InvalidFilter(f"'{where}' has no filterable sub-attribute '{name}'")
        return columns[name.lower()]

    try:
        return _Builder("Group", "").row_tree(subs, tree, "members")
    except RecursionError as exc:
        raise InvalidFilter("filter is nested too deeply") from exc


def _literal(attr: _Scalar, op: str, raw: Any, printable: str) -> Any:
    """The Python value a literal stands for, checked against the attribute's type."""
    if isinstance(raw, _Bare) and raw == "null":
        return None
    if attr.type == "boolean":
        if not isinstance(raw, _Bare) or raw not in ("true", "false"):
            raise InvalidFilter(f"'{printable}' is boolean: compare it with true or false, unquoted")
        return raw == "true"
    if not isinstance(raw, _Quoted):
        raise InvalidFilter(f"'{printable}' is a {attr.type}: its value must be a quoted string")
    if attr.type == "dateTime":
        try:
            value = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidFilter(f"'{printable}' is a dateTime: {str(raw)!r} is not ISO 8601") from exc
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return str(raw)


def _folded(attr: _Scalar) -> Any:
    """What a folded string literal is compared with: the stored folded column where there is one
    (indexed, and folded by the very rule the literal was), else lower() of the column."""
    return attr.folded if attr.folded is not None else func.lower(attr.column)


def _prefix_range(column: Any, prefix: str) -> list[ColumnElement[bool]]:
    """``column >= prefix AND column < successor``: what a B-tree seeks with or without the literal at
    hand (a prepared statement's generic plan cannot see through ``LIKE $1``). Folded columns compare
    bytewise on both databases (SQLite's BINARY, ``COLLATE "C"`` on PostgreSQL), an order in which
    every string that starts with the prefix lies in that range; LIKE still decides."""
    if not prefix:
        return []
    successor = ord(prefix[-1]) + 1
    if successor == 0xD800:  # past the surrogates, which no stored string holds
        successor = 0xE000
    if successor > 0x10FFFF:
        return []
    return [column >= prefix, column < prefix[:-1] + chr(successor)]


def _pattern(attr: _Scalar, column: Any, op: str, value: Any) -> list[ColumnElement[bool]]:
    """``co``/``sw``/``ew`` as LIKE terms the indexes can serve.

    A folded column takes the folded literal as is (a trigram index on PostgreSQL; a prefix also as
    a range, see ``_prefix_range``). Other case-insensitive columns use ILIKE on PostgreSQL, which a
    trigram index serves, and ``lower(column) LIKE lower(literal)`` elsewhere.
    """
    if isinstance(value, str) and not attr.case_exact and attr.folded is None:
        insensitive = {"co": attr.column.icontains, "sw": attr.column.istartswith, "ew": attr.column.iendswith}[op]
        return [insensitive(value, autoescape=True)]
    matcher = {"co": column.contains, "sw": column.startswith, "ew": column.endswith}[op]
    terms = [matcher(value, autoescape=True)]
    if attr.folded is not None and op == "sw":
        terms.extend(_prefix_range(column, value))
    if attr.case_exact and value:
        # SQLite's LIKE ignores ASCII case, so `externalId sw "ext"` would match "Ext-A" there and not on
        # PostgreSQL; replace() and substr() compare exactly on both (LIKE still narrows first).
        terms.append(
            {
                "co": func.replace(column, value, "") != column,
                "sw": func.substr(column, 1, len(value)) == value,
                "ew": func.substr(column, func.length(column) - len(value) + 1) == value,
            }[op]
        )
    return terms


def _compare(attr: _Scalar, op: str, raw: Any, printable: str) -> ColumnElement[bool]:
    """One ``attr op value`` per RFC 7644 Table 3, honouring type and caseExact."""
    column: Any = attr.column
    if op == "pr":
        present = column.is_not(None)
        return and_(present, column != "") if attr.type == "string" else present
    if op not in ("eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"):
        raise InvalidFilter(f"unknown operator '{op}'")
    if attr.type in ("boolean", "binary") and op not in ("eq", "ne"):
        raise InvalidFilter(f"'{op}' does not apply to {attr.type} attribute '{printable}'")
    if attr.type == "dateTime" and op in ("co", "sw", "ew"):
        raise InvalidFilter(f"'{op}' does not apply to dateTime attribute '{printable}'")
    value = _literal(attr, op, raw, printable)
    if value is None:
        if op == "eq":
            return column.is_(None)  # type: ignore[no-any-return]
        if op == "ne":
            return column.is_not(None)  # type: ignore[no-any-return]
        raise InvalidFilter(f"'{op}' cannot compare '{printable}' with null")
    if isinstance(value, str) and not attr.case_exact:
        value = fold(value)
        column = _folded(attr)
    if op == "ne":
        return or_(attr.column.is_(None), column != value)
    # An unassigned attribute does not match (RFC 7644 §3.4.2.2), so `not (title eq "x")` must match
    # it. SQL says NULL = 'x' is NULL and NOT NULL is NULL, which would drop every user without a
    # title; `IS NOT NULL AND ...` is FALSE for them instead, and stays FALSE under NOT.
    assigned = attr.column.is_not(None)
    if op == "eq":
        return and_(assigned, column == value)
    if op in ("co", "sw", "ew"):
        return and_(assigned, *_pattern(attr, column, op, value))
    comparisons = {"gt": column > value, "ge": column >= value, "lt": column < value, "le": column <= value}
    return and_(assigned, comparisons[op])


_EQUALITY = re.compile(
    r'[ \t]*([a-zA-Z][a-zA-Z0-9_-]*(?:\.[a-zA-Z][a-zA-Z0-9_-]*)?)[ \t]+[eE][qQ][ \t]*"([^"\\\x00-\x1f]*)"[ \t]*'
)
"""``attribute eq "text"``, spelled so that the lexer reads it as exactly those three tokens and the
literal needs no unescaping (no backslash, no control character)."""


@dataclass(frozen=True)
class Equality:
    """A filter that is one ``attribute eq "string"`` on a single-valued string attribute."""

    kind: ResourceKind
    key: str  #: the attribute's catalogue key, e.g. "username"
    value: str  #: the literal as compared: folded unless the attribute is caseExact


def equality(text: str, *, kind: ResourceKind, max_length: int = 4096) -> Equality | None:
    """Recognise the commonest filter (``userName eq``, ``externalId eq``, ``displayName eq``: what
    IdPs send before every create) without the parser, or None for anything else.

    ``equality_predicate`` is the predicate ``build_filter`` makes for it, built once per attribute
    with the value as a bind parameter: per request there is no parsing and no SQL construction.
    """
    match = _EQUALITY.fullmatch(text) if len(text) <= max_length else None
    if match is None:
        return None
    key, value = match.group(1).lower(), match.group(2)
    target = _CATALOGUES[kind].get(key)
    if not isinstance(target, _Scalar) or target.type not in ("string", "reference") or unstorable(value):
        return None
    return Equality(kind, key, value if target.case_exact else fold(value))


@functools.cache
def equality_predicate(kind: ResourceKind, key: str) -> ColumnElement[bool]:
    """``build_filter``'s predicate for ``<key> eq <value>``, the value bound as ``filter_value``."""
    attr = _CATALOGUES[kind][key]
    assert isinstance(attr, _Scalar)
    compared = attr.column if attr.case_exact else _folded(attr)
    return and_(attr.column.is_not(None), compared == bindparam("filter_value"))


def build_filter(
    text: str, *, kind: ResourceKind, partner_id: str, max_length: int = 4096, root: bool = False
) -> ColumnElement[bool]:
    """The SQL predicate for a SCIM filter over one partner's Users or Groups.

    ``root``: the search spans both types (POST /.search), so attributes of the other type only
    have no value here instead of being refused (RFC 7644 §3.4.2.2).
    """
    tree = parse_filter(text, max_length=max_length)
    try:
        return _Builder(kind, partner_id, root=root).build(tree)
    except RecursionError as exc:
        raise InvalidFilter("filter is nested too deeply") from exc


def sort_key(path: str, *, kind: ResourceKind) -> ColumnElement[Any]:
    """The SQL expression ``sortBy`` orders by: a column, or a multi-valued attribute's primary value."""
    text = path.strip()
    lowered = text.lower()
    core = _CORE[kind]
    if lowered.startswith(core + ":"):
        lowered = lowered[len(core) + 1 :]
    catalogue = _CATALOGUES[kind]
    candidates = [lowered]
    if kind == "User" and not lowered.startswith("urn:"):
        candidates.append(f"{ENTERPRISE.lower()}:{lowered}")
    target: _Target | None = next((catalogue[c] for c in candidates if c in catalogue), None)
    sub = ""
    if target is None and not lowered.startswith("urn:"):
        head, _, sub = lowered.partition(".")
        target = catalogue.get(head)
    if isinstance(target, _Scalar):
        if target.type == "string" and not target.case_exact:
            return target.folded if target.folded is not None else func.lower(target.column)
        return target.column
    if isinstance(target, _Multi) and sub in ("", "value"):
        return (
            select(ScimValue.value_ci)
            .where(ScimValue.user_pk == ScimUser.pk, ScimValue.attribute == target.attribute)
            .order_by(ScimValue.primary.desc(), ScimValue.pk)  # type: ignore[attr-defined]
            .limit(1)
            .scalar_subquery()
        )
    raise InvalidValue(f"cannot sort {kind}s by '{text}'")
