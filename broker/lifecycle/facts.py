"""What the policies may know about partner people, read from the partner's SCIM tables in a few queries.

Groups are resolved through nesting (a member of a group that is itself a member of ``eng`` is in
``eng``). Only emails in the partner's verified domains become facts: an address a partner's IdP
sends for a domain it does not own is never trusted to grant anything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from broker.policy.facts import SubjectFacts
from broker.scim.models import GroupMember, ScimGroup, ScimUser
from broker.tenants.models import Partner, PartnerDomain

__all__ = ["Person", "flatten_attributes", "load_people", "load_person", "transitive_user_members"]

_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def flatten_attributes(attributes: Mapping[str, Any]) -> dict[str, str]:
    """Single-valued SCIM attributes by path (``name.givenName``; enterprise ones also by short name)."""
    flat: dict[str, str] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, bool):
            flat[prefix] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            flat[prefix] = str(value)

    for key, value in attributes.items():
        if key == _ENTERPRISE and isinstance(value, Mapping):
            visit("", {k: v for k, v in value.items() if k != "manager"})
            visit(_ENTERPRISE, value)
        elif not isinstance(value, list):
            visit(key, value)
    return flat


def _verified_emails(attributes: Mapping[str, Any], user_name: str, domains: set[str]) -> list[str]:
    """Emails in a verified domain, primary first, then in the order sent; userName counts if it is one."""
    values = [e for e in attributes.get("emails") or [] if isinstance(e, Mapping) and isinstance(e.get("value"), str)]
    values.sort(key=lambda e: not e.get("primary"))
    candidates = [str(e["value"]).strip().lower() for e in values] + [user_name.strip().lower()]
    verified: list[str] = []
    for email in candidates:
        if "@" in email and email.rsplit("@", 1)[1] in domains and email not in verified:
            verified.append(email)
    return verified


def _group_names(session: Session, partner_id: str, user_ids: list[str]) -> dict[str, set[str]]:
    """Every group each user is in, directly or through nested groups, by display name."""
    direct = session.exec(
        select(GroupMember.member_id, GroupMember.group_pk).where(
            GroupMember.partner_id == partner_id, col(GroupMember.member_id).in_(user_ids)
        )
    ).all()
    pks_of: dict[str, set[int]] = defaultdict(set)
    for member_id, group_pk in direct:
        pks_of[member_id].add(group_pk)
    known: dict[int, tuple[str, str]] = {}  # pk -> (id, display name)
    parents: dict[int, set[int]] = {}
    frontier = {pk for pks in pks_of.values() for pk in pks}
    while frontier:
        rows = session.exec(
            select(ScimGroup.pk, ScimGroup.id, ScimGroup.display_name).where(
                ScimGroup.partner_id == partner_id, col(ScimGroup.pk).in_(frontier)
            )
        ).all()
        for pk, group_id, name in rows:
            assert pk is not None
            known[pk] = (group_id, name)
        by_id = {known[pk][0]: pk for pk in frontier if pk in known}
        links = session.exec(
            select(GroupMember.member_id, GroupMember.group_pk).where(
                GroupMember.partner_id == partner_id,
                GroupMember.member_type == "Group",
                col(GroupMember.member_id).in_(list(by_id)),
            )
        ).all()
        for member_id, group_pk in links:
            parents.setdefault(by_id[member_id], set()).add(group_pk)
        frontier = {pk for _, pk in links} - set(known)

    def closure(pks: Iterable[int]) -> set[str]:
        seen: set[int] = set()
        stack = list(pks)
        while stack:
            pk = stack.pop()
            if pk in seen or pk not in known:
                continue
            seen.add(pk)
            stack.extend(parents.get(pk, ()))
        return {known[pk][1] for pk in seen}

    return {user_id: closure(pks) for user_id, pks in pks_of.items()}


@dataclass(frozen=True)
class Person:
    """A partner person as the engine needs them: the policy facts and the email workspaces get."""

    facts: SubjectFacts
    email: str | None
    """The primary verified-domain email (else the first one), ``None`` if none is verified."""


def load_people(session: Session, *, partner_id: str, subject_ids: Iterable[str]) -> dict[str, Person]:
    """Each subject that still exists in the partner's tenant; deleted subjects are absent."""
    ids = sorted(set(subject_ids))
    if not ids:
        return {}
    partner = session.get(Partner, partner_id)
    if partner is None:
        return {}
    domains = set(session.exec(select(PartnerDomain.domain).where(PartnerDomain.partner_id == partner_id)).all())
    users = session.exec(select(ScimUser).where(ScimUser.partner_id == partner_id, col(ScimUser.id).in_(ids))).all()
    groups = _group_names(session, partner_id, [u.id for u in users])
    people: dict[str, Person] = {}
    for user in users:
        emails = _verified_emails(user.attributes, user.user_name, domains)
        facts = SubjectFacts(
            tenant=partner.slug,
            subject_id=user.id,
            active=user.active,
            user_name=user.user_name,
            groups=frozenset(groups.get(user.id, ())),
            attributes=flatten_attributes(user.attributes),
            verified_emails=frozenset(emails),
            joined_at=user.joined_at,
        )
        people[user.id] = Person(facts=facts, email=emails[0] if emails else None)
    return people


def transitive_user_members(session: Session, *, partner_id: str, group_ids: Iterable[str]) -> set[str]:
    """Users inside these groups at any depth: whom a group rename or nesting change can affect."""
    users: set[str] = set()
    seen: set[str] = set()
    frontier = set(group_ids)
    while frontier:
        seen |= frontier
        rows = session.exec(
            select(GroupMember.member_id, GroupMember.member_type)
            .join(ScimGroup, ScimGroup.pk == GroupMember.group_pk)  # type: ignore[arg-type]
            .where(GroupMember.partner_id == partner_id, col(ScimGroup.id).in_(frontier))
        ).all()
        users |= {member for member, kind in rows if kind == "User"}
        frontier = {member for member, kind in rows if kind == "Group"} - seen
    return users


_USERS = ScimUser.__table__  # type: ignore[attr-defined]
_PARTNERS = Partner.__table__  # type: ignore[attr-defined]
_DOMAINS = PartnerDomain.__table__  # type: ignore[attr-defined]
_GROUPS = ScimGroup.__table__  # type: ignore[attr-defined]
_MEMBERS = GroupMember.__table__  # type: ignore[attr-defined]

_PERSON = (
    core_select(
        _PARTNERS.c.slug, _USERS.c.id, _USERS.c.active, _USERS.c.user_name, _USERS.c.attributes, _USERS.c.joined_at
    )
    .select_from(_USERS.join(_PARTNERS, _PARTNERS.c.id == _USERS.c.partner_id))
    .where(_USERS.c.partner_id == bindparam("partner_id"), _USERS.c.id == bindparam("subject_id"))
)
_PARTNER_DOMAINS = core_select(_DOMAINS.c.domain).where(_DOMAINS.c.partner_id == bindparam("partner_id"))


def _person_groups_statement() -> Any:
    """The display names of every group one user is in, directly or through nesting: ``_group_names``
    for one user as a recursive CTE (UNION, so a nesting cycle ends). A group pk that is not a group of
    the partner is neither named nor followed upwards, as there."""
    member = _MEMBERS.alias("direct")
    anchor = core_select(member.c.group_pk.label("pk")).where(
        member.c.partner_id == bindparam("partner_id"), member.c.member_id == bindparam("subject_id")
    )
    found = anchor.cte("person_groups", recursive=True)
    group = _GROUPS.alias("inner_group")
    link = _MEMBERS.alias("link")
    step = (
        core_select(link.c.group_pk)
        .select_from(
            found.join(group, group.c.pk == found.c.pk).join(
                link, (link.c.member_id == group.c.id) & (link.c.member_type == "Group")
            )
        )
        .where(group.c.partner_id == bindparam("partner_id"), link.c.partner_id == bindparam("partner_id"))
    )
    found = found.union(step)
    named = _GROUPS.alias("named")
    return (
        core_select(named.c.display_name)
        .distinct()
        .select_from(found.join(named, named.c.pk == found.c.pk))
        .where(named.c.partner_id == bindparam("partner_id"))
    )


_PERSON_GROUPS = _person_groups_statement()


def load_person(session: Session, *, partner_id: str, subject_id: str) -> Person | None:
    """``load_people`` for one subject in three prebuilt Core queries (the token and UserInfo paths).

    Reads the session's connection directly: call it where the session holds no unflushed changes
    to the partner's SCIM tables.
    """
    connection = session.connection()
    key = {"partner_id": partner_id, "subject_id": subject_id}
    user = connection.execute(_PERSON, key).first()
    if user is None:
        return None
    domains = set(connection.execute(_PARTNER_DOMAINS, key).scalars().all())
    groups = frozenset(connection.execute(_PERSON_GROUPS, key).scalars().all())
    emails = _verified_emails(user.attributes, user.user_name, domains)
    facts = SubjectFacts(
        tenant=user.slug,
        subject_id=user.id,
        active=user.active,
        user_name=user.user_name,
        groups=groups,
        attributes=flatten_attributes(user.attributes),
        verified_emails=frozenset(emails),
        joined_at=user.joined_at,
    )
    return Person(facts=facts, email=emails[0] if emails else None)
