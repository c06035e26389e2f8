"""The stale-access report's six sections, exactly, on the scenario of conftest.py; partner and workspace scope."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.outbox import DeliveryTask
from broker.reports.models import ReconcileOrphan
from broker.reports.rows import (
    ExpiredGrant,
    InactivePerson,
    OrphanedAccount,
    ReportRow,
    ScimTokenFinding,
    Section,
    SilentFeed,
    days_between,
)
from broker.reports.runner import stale_access, stale_access_rows
from broker.reports.scope import ReportOptions, ReportScope
from broker.tenants.models import ScimToken
from broker.types import utcnow
from tests.conftest import PartnerHandle
from tests.reports.conftest import Scenario


def _rows(engine: Engine, scenario: Scenario, now: dt.datetime, **scope: Any) -> list[ReportRow]:
    return list(stale_access(engine, scope=scenario.scope(**scope), options=scenario.options(now)))


def _section(rows: list[ReportRow], section: Section) -> list[Any]:
    return [row for row in rows if row.section is section]


def _token(engine: Engine, token_id: str) -> ScimToken:
    with Session(engine) as session:
        return session.exec(select(ScimToken).where(ScimToken.id == token_id)).one()


def _fixture_token(engine: Engine, handle: PartnerHandle) -> ScimToken:
    return _token(engine, handle.token.split("_")[2])


def test_every_section_of_a_partner(engine: Engine, scenario: Scenario) -> None:
    s, now = scenario, utcnow()
    p, t0, days = s.people, s.t0, dt.timedelta(days=1)
    rows = _rows(engine, s, now, handle=s.a)
    assert {row.partner for row in rows} == {s.a.slug}
    assert [row.section for row in rows] == sorted((row.section for row in rows), key=list(Section).index)

    [orphan] = _section(rows, Section.ORPHANED_ACCOUNTS)
    assert s.reconciled[0] <= orphan.first_found_at <= s.reconciled[1]
    assert orphan == OrphanedAccount(
        partner=s.a.slug, workspace=s.live.slug, subject_id=p["ola"]["id"], user_name=s.a.email("ola"),
        remote_id=s.orphan_remote_id, person_state="active", first_found_at=orphan.first_found_at,
        last_seen_at=orphan.first_found_at, age_days=days_between(orphan.first_found_at, now),
    )  # fmt: skip

    assert _section(rows, Section.INACTIVE_PEOPLE) == [
        InactivePerson(
            partner=s.a.slug, workspace=None, subject_id=p["ann"]["id"], user_name=s.a.email("ann"),
            last_login_at=None, last_scim_change_at=t0 - 120 * days, last_activity_at=t0 - 120 * days,
            inactive_days=days_between(t0 - 120 * days, now), grants=2,
        ),
        InactivePerson(
            partner=s.a.slug, workspace=None, subject_id=p["cat"]["id"], user_name=s.a.email("cat"),
            last_login_at=t0 - 100 * days, last_scim_change_at=t0 - 120 * days, last_activity_at=t0 - 100 * days,
            inactive_days=days_between(t0 - 100 * days, now), grants=2,
        ),
    ]  # fmt: skip

    with Session(engine) as session:
        fay_grant = session.exec(select(AccessGrant).where(AccessGrant.subject_id == p["fay"]["id"])).one()
    assert _section(rows, Section.EXPIRED_GRANTS) == [
        ExpiredGrant(
            partner=s.a.slug, workspace=s.live.slug, subject_id=p["fay"]["id"], user_name=s.a.email("fay"),
            role="member", rule_id=f"{s.a.slug}-temp", until=t0 - 2 * days,
            overdue_days=days_between(t0 - 2 * days, now), granted_at=fay_grant.granted_at,
        )
    ]  # fmt: skip

    revocations = _section(rows, Section.PENDING_REVOCATIONS)
    assert [(r.subject_id, r.workspace, r.action, r.state, r.attempts, r.person_state) for r in revocations] == [
        # plain SCIM has no session lever: dan's revoke_sessions in down was receipted `unsupported`
        (p["dan"]["id"], s.down.slug, "deprovision", "dead", 1, "left"),
        (p["eve"]["id"], s.held.slug, "revoke_sessions", "pending", 0, "left"),
        (p["eve"]["id"], s.held.slug, "deprovision", "pending", 0, "left"),
    ]
    with Session(engine) as session:
        tasks = {t.id: t for t in session.exec(select(DeliveryTask).where(DeliveryTask.partner_id == s.a.id)).all()}
    for r in revocations:
        task = tasks[r.task_id]
        assert (r.subject_id, r.action, r.state, r.cause, r.accepted_at) == (
            task.subject_id, task.action, task.state, task.cause, task.accepted_at,
        )  # fmt: skip
        assert r.age_seconds == round((now - task.accepted_at).total_seconds(), 3) and r.age_seconds > 0
        assert r.user_name == s.a.email(r.user_name.split("@")[0])
        assert (r.last_error is not None) == (r.state == "dead")

    assert _section(rows, Section.SILENT_FEEDS) == []

    old, fixture = _token(engine, s.old_token_id), _fixture_token(engine, s.a)
    assert fixture.last_used_at is not None
    assert _section(rows, Section.SCIM_TOKENS) == [
        ScimTokenFinding(
            partner=s.a.slug, token_id=old.id, label=None, status="never_used", created_at=t0 - 60 * days,
            expires_at=old.expires_at, last_used_at=None, expires_in_days=days_between(now, old.expires_at),
            unused_days=days_between(t0 - 60 * days, now),
        ),
        ScimTokenFinding(
            partner=s.a.slug, token_id=fixture.id, label=None, status="expiring", created_at=fixture.created_at,
            expires_at=fixture.expires_at, last_used_at=fixture.last_used_at,
            expires_in_days=days_between(now, fixture.expires_at), unused_days=days_between(fixture.last_used_at, now),
        ),
    ]  # fmt: skip
    assert s.revoked_token_id not in {r.token_id for r in _section(rows, Section.SCIM_TOKENS)}


def test_silent_feeds_and_partners_with_little_to_report(engine: Engine, scenario: Scenario) -> None:
    s, now, days = scenario, utcnow(), dt.timedelta(days=1)
    b_rows = _rows(engine, s, now, handle=s.b)
    b_token = _fixture_token(engine, s.b)
    assert b_token.last_used_at is not None
    assert [row.section for row in b_rows] == [Section.SILENT_FEEDS, Section.SCIM_TOKENS]
    assert b_rows[0] == SilentFeed(
        partner=s.b.slug, partner_status="active", last_change_at=s.t0 - 60 * days,
        last_contact_at=b_token.last_used_at, silent_since=s.t0 - 60 * days,
        silent_days=days_between(s.t0 - 60 * days, now),
    )  # fmt: skip
    [b_finding] = _section(b_rows, Section.SCIM_TOKENS)
    assert (b_finding.token_id, b_finding.status) == (b_token.id, "expiring")

    c_rows = _rows(engine, s, now, handle=s.c)
    c_token = _fixture_token(engine, s.c)
    assert c_rows[0] == SilentFeed(
        partner=s.c.slug, partner_status="active", last_change_at=None, last_contact_at=None,
        silent_since=s.t0 - 40 * days, silent_days=days_between(s.t0 - 40 * days, now),
    )  # fmt: skip
    assert [r.section for r in c_rows] == [Section.SILENT_FEEDS, Section.SCIM_TOKENS]
    assert [(r.token_id, r.status) for r in _section(c_rows, Section.SCIM_TOKENS)] == [(c_token.id, "expiring")]


def test_partner_isolation(engine: Engine, scenario: Scenario) -> None:
    """A's report never shows B, and the operator's report is every partner's own report, in slug order."""
    s, now = scenario, utcnow()
    mine = {s.a.slug, s.b.slug, s.c.slug}
    per_partner = {h.slug: [r.as_json() for r in _rows(engine, s, now, handle=h)] for h in (s.a, s.b, s.c)}
    assert all(row["partner"] == slug for slug, rows in per_partner.items() for row in rows)
    b_subjects = {s.people["bea"]["id"]}
    assert not any(row.get("subject_id") in b_subjects for row in per_partner[s.a.slug])

    everyone = [r.as_json() for r in _rows(engine, s, now) if r.partner in mine]
    assert everyone == [row for slug in sorted(mine) for row in per_partner[slug]]


def test_workspace_scope(engine: Engine, scenario: Scenario) -> None:
    """People-level sections keep that workspace's rows; partner-level ones need the partner's people there."""
    s, now = scenario, utcnow()
    rows = _rows(engine, s, now, handle=s.a, workspace=s.down)
    assert [(r.section, getattr(r, "subject_id", None), getattr(r, "workspace", None)) for r in rows] == [
        (Section.INACTIVE_PEOPLE, s.people["ann"]["id"], s.down.slug),
        (Section.INACTIVE_PEOPLE, s.people["cat"]["id"], s.down.slug),
        (Section.PENDING_REVOCATIONS, s.people["dan"]["id"], s.down.slug),
        (Section.SCIM_TOKENS, None, None),
        (Section.SCIM_TOKENS, None, None),
    ]
    assert _rows(engine, s, now, handle=s.b, workspace=s.down) == []
    live = _rows(engine, s, now, handle=s.a, workspace=s.live)
    assert [r.section for r in live] == [
        Section.ORPHANED_ACCOUNTS, Section.INACTIVE_PEOPLE, Section.INACTIVE_PEOPLE, Section.EXPIRED_GRANTS,
        Section.SCIM_TOKENS, Section.SCIM_TOKENS,
    ]  # fmt: skip


def test_thresholds_come_from_the_options(engine: Engine, scenario: Scenario) -> None:
    s, now = scenario, utcnow()
    wide = ReportOptions(inactive_days=110, silent_feed_days=90, token_expiry_days=0, token_unused_days=90, now=now)
    rows = list(stale_access(engine, scope=s.scope(s.a), options=wide))
    assert [r.subject_id for r in _section(rows, Section.INACTIVE_PEOPLE)] == [s.people["ann"]["id"]]
    assert _section(rows, Section.SCIM_TOKENS) == []
    b_rows = list(stale_access(engine, scope=s.scope(s.b), options=wide))
    assert _section(b_rows, Section.SILENT_FEEDS) == []
    narrow = ReportOptions(inactive_days=5, silent_feed_days=30, token_expiry_days=30, token_unused_days=30, now=now)
    rows = list(stale_access(engine, scope=s.scope(s.a), options=narrow))
    assert [r.subject_id for r in _section(rows, Section.INACTIVE_PEOPLE)] == [
        s.people[name]["id"] for name in ("ann", "bob", "cat")
    ]


def test_an_orphan_leaves_the_report_once_granted(engine: Engine, scenario: Scenario) -> None:
    """The section shows what is still an orphan: a grant for the account since reconciliation resolves it."""
    s, now = scenario, utcnow()
    with Session(engine) as session:
        [recorded] = session.exec(select(ReconcileOrphan).where(ReconcileOrphan.partner_id == s.a.id)).all()
        session.add(
            AccessGrant(
                partner_id=s.a.id, subject_id=recorded.subject_id, workspace_id=recorded.workspace_id,
                role="member", rule_id="manual", spec_sha256="",
            )
        )  # fmt: skip
        session.flush()
        scope = ReportScope(partner=s.ref(s.a))
        rows = list(stale_access_rows(session.connection(), scope=scope, options=s.options(now)))
        session.rollback()
    assert _section(rows, Section.ORPHANED_ACCOUNTS) == []


def test_a_partners_policy_sets_its_own_inactivity_threshold(engine: Engine, scenario: Scenario) -> None:
    """``inactive_after`` on a partner's rules measures that partner (the shortest wins); others keep the default."""
    from broker.audit.log import Actor
    from broker.policy.store import save_policies

    s, now = scenario, utcnow()
    wide = ReportOptions(inactive_days=110, silent_feed_days=30, token_expiry_days=30, token_unused_days=30, now=now)
    text = f"""
rules:
- id: {s.a.slug}-stale-long
  tenant: {s.a.slug}
  when: {{}}
  grant: [{{ workspace: ws-any, role: member }}]
  inactive_after: 12w
- id: {s.a.slug}-stale-short
  tenant: {s.a.slug}
  when: {{}}
  grant: [{{ workspace: ws-other, role: member }}]
  inactive_after: 5d
"""
    with Session(engine) as session:
        save_policies(session, documents=[("stale.yaml", text)], actor=Actor(kind="cli", id="test"))
        session.flush()
        a_rows = list(stale_access_rows(session.connection(), scope=s.scope(s.a), options=wide))
        b_rows = list(stale_access_rows(session.connection(), scope=s.scope(s.b), options=wide))
        session.rollback()  # the policy set in force stays the scenario's
    assert [r.subject_id for r in _section(a_rows, Section.INACTIVE_PEOPLE)] == [
        s.people[name]["id"] for name in ("ann", "bob", "cat")
    ]
    b_default = list(stale_access(engine, scope=s.scope(s.b), options=wide))
    assert _section(b_rows, Section.INACTIVE_PEOPLE) == _section(b_default, Section.INACTIVE_PEOPLE)
