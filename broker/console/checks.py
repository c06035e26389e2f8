"""The console's read-only tools: the stale-access report, an audit record's inclusion proof, a policy dry run.

Each is the code the command line uses, scoped to the admin: the report is ``broker.reports`` with a
partner admin pinned to their partner (as a partner's SCIM token is on ``/api/reports/stale``); the
proof check is ``broker.audit.verify.verify_record``, the check `entente audit verify` makes for each
record of a partner slice, against the latest signed checkpoint and the log's own key; the dry run is
``broker.policy.changes.dry_run``, the code of `entente policy diff`, rolled back.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.audit.checkpoints import AuditCheckpoint, latest_checkpoint, load_log_key
from broker.audit.errors import AuditError, LeafMismatch, VerificationFailed
from broker.audit.log import Actor, AuditRecord, leaf_data, record_entry
from broker.audit.merkle import Node, hash_leaf
from broker.audit.tree import AuditLeaf, AuditNode, inclusion_proof, node_key
from broker.audit.verify import verify_record
from broker.console.auth import Admin
from broker.errors import InvalidValue, NotFound
from broker.lifecycle.engine import AccessChange
from broker.lifecycle.grants import AccessGrant
from broker.policy.changes import dry_run
from broker.policy.store import PolicyVersion
from broker.reports.rows import Section
from broker.reports.runner import stale_access
from broker.reports.scope import ReportOptions, ReportScope, resolve_scope
from broker.settings import Settings
from broker.tenants.models import Partner
from broker.workspaces.models import Workspace

__all__ = [
    "SECTION_LABELS",
    "Bar",
    "DryRun",
    "ProofCheck",
    "ReportRequest",
    "ReportView",
    "check_record",
    "leaf_indices",
    "policy_dry_run",
    "report_scope",
    "stale_report",
]

SECTION_LABELS = {
    Section.ORPHANED_ACCOUNTS: "Orphaned accounts",
    Section.INACTIVE_PEOPLE: "Inactive people",
    Section.EXPIRED_GRANTS: "Expired grants still in force",
    Section.PENDING_REVOCATIONS: "Pending revocations",
    Section.SILENT_FEEDS: "Silent SCIM feeds",
    Section.SCIM_TOKENS: "SCIM tokens needing attention",
}
"""Each section's heading on the page (the section's own name stays in the CSV and JSON Lines)."""

MAX_POLICY_TEXT = 512 * 1024
"""Longest policy document the dry-run form takes (characters)."""


# --- the stale-access report ---------------------------------------------------------------------


def _days(value: str | None, name: str) -> int | None:
    """A threshold from a form field: empty means the default; otherwise 0 or more whole days."""
    if value is None or not value.strip():
        return None
    if not (value.strip().isascii() and value.strip().isdigit()):
        raise InvalidValue(f"{name} must be a whole number of days (0 or more)")
    return int(value.strip())


@dataclass(frozen=True)
class ReportRequest:
    """What the report form asked for, as sent (empty = all / the default)."""

    partner: str = ""
    workspace: str = ""
    inactive_days: str = ""
    silent_days: str = ""
    token_expiry_days: str = ""
    token_unused_days: str = ""

    def query(self) -> str:
        """The same request as a query string (for the download links), without empty fields."""
        return urlencode({k: v for k, v in vars(self).items() if v})


def report_scope(
    session: Session, *, admin: Admin, settings: Settings, asked: ReportRequest
) -> tuple[ReportScope, ReportOptions]:
    """Resolve the form: an operator any partner and workspace; a partner admin only their own partner
    (naming another is ``NotFound``, as for a missing one, exactly as on ``/api/reports/stale``)."""
    scope = resolve_scope(
        session,
        partner_slug=asked.partner or None,
        workspace_slug=asked.workspace or None,
        caller_partner_id=None if admin.is_operator else admin.partner_id,
    )
    options = ReportOptions.from_settings(
        settings,
        inactive_days=_days(asked.inactive_days, "inactive days"),
        silent_feed_days=_days(asked.silent_days, "silent feed days"),
        token_expiry_days=_days(asked.token_expiry_days, "token expiry days"),
        token_unused_days=_days(asked.token_unused_days, "token unused days"),
    )
    return scope, options


@dataclass(frozen=True)
class Bar:
    """One bar of the inline SVG chart (coordinates in the chart's viewBox)."""

    label: str
    count: int
    y: int
    width: int


CHART_BAR, CHART_ROW = 340, 30
"""Longest bar and row height in the chart's viewBox (640 wide; labels end at 222, bars start at 230)."""


@dataclass
class ReportView:
    """Counts per section (over the whole report) and its first ``limit`` rows per section (flat columns)."""

    asked: ReportRequest
    options: ReportOptions
    limit: int
    counts: dict[Section, int] = field(default_factory=lambda: dict.fromkeys(Section, 0))
    rows: dict[Section, list[tuple[str, ...]]] = field(default_factory=lambda: {s: [] for s in Section})
    partners: list[str] = field(default_factory=list)
    """Partner slugs the admin may pick (an operator: all; a partner admin: their own)."""
    workspaces: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def labels(self) -> dict[Section, str]:
        return SECTION_LABELS

    def bars(self) -> list[Bar]:
        top = max(self.counts.values(), default=0) or 1
        return [
            Bar(SECTION_LABELS[s], n, 10 + i * CHART_ROW, max(2, round(CHART_BAR * n / top)) if n else 0)
            for i, (s, n) in enumerate(self.counts.items())
        ]

    @property
    def chart_height(self) -> int:
        return 20 + len(self.counts) * CHART_ROW

    def description(self) -> str:
        return "; ".join(f"{SECTION_LABELS[s]}: {n}" for s, n in self.counts.items()) + f". Total {self.total}."


def _choices(session: Session, admin: Admin) -> tuple[list[str], list[str]]:
    partners = select(Partner.slug).order_by(col(Partner.slug))
    workspaces = select(Workspace.slug).order_by(col(Workspace.slug))
    if not admin.is_operator:
        partners = partners.where(Partner.id == admin.partner_id)
        held = select(AccessGrant.workspace_id).where(AccessGrant.partner_id == admin.partner_id)
        workspaces = workspaces.where(col(Workspace.id).in_(held))
    return list(session.exec(partners).all()), list(session.exec(workspaces).all())


def stale_report(
    session: Session, engine: Engine, *, admin: Admin, settings: Settings, asked: ReportRequest, limit: int = 20
) -> ReportView:
    """The report for the admin's scope, streamed once: every row counted, the first ``limit`` of each section kept."""
    scope, options = report_scope(session, admin=admin, settings=settings, asked=asked)
    partners, workspaces = _choices(session, admin)
    session.rollback()  # the report reads in its own snapshot; hold nothing meanwhile
    view = ReportView(asked, options, limit, partners=partners, workspaces=workspaces)
    for row in stale_access(engine, scope=scope, options=options):
        view.counts[row.section] += 1
        kept = view.rows[row.section]
        if len(kept) < limit:
            kept.append(row.flat())
    return view


# --- an audit record's inclusion proof -----------------------------------------------------------


@dataclass(frozen=True)
class ProofCheck:
    """The outcome of checking one leaf against the latest signed checkpoint; ``failure`` says what failed."""

    leaf_index: int
    record: AuditRecord
    leaf_hash: str
    """Base64 RFC 9162 leaf hash, recomputed from the record's content."""
    checkpoint: AuditCheckpoint | None
    proof: list[str] = field(default_factory=list)
    key: str = ""
    """The verifier key the signature was checked with (the log's own, as `entente audit public-key` prints)."""
    verified: bool = False
    failure: str | None = None

    @property
    def root(self) -> str:
        return base64.b64encode(self.checkpoint.root_hash).decode() if self.checkpoint else ""


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def check_record(session: Session, *, admin: Admin, settings: Settings, leaf_index: int) -> ProofCheck:
    """Verify leaf ``leaf_index`` as `entente audit verify` does; a partner admin only their partner's (else
    ``NotFound``, exactly as for a leaf that does not exist)."""
    leaf = session.get(AuditLeaf, leaf_index) if leaf_index >= 0 else None
    if leaf is None or not (admin.is_operator or leaf.partner_id == admin.partner_id):
        raise NotFound(f"no audit record {'of your partner ' if not admin.is_operator else ''}at leaf {leaf_index}")
    record = session.get(AuditRecord, leaf.record_id)
    if record is None:  # pragma: no cover - a leaf's record is never deleted (foreign key)
        raise NotFound(f"no audit record at leaf {leaf_index}")
    entry = record_entry(record)
    leaf_hash = hash_leaf(leaf_data(entry))
    outcome = ProofCheck(leaf_index=leaf_index, record=record, leaf_hash=_b64(leaf_hash), checkpoint=None)
    checkpoint = latest_checkpoint(session)
    if checkpoint is None:
        return replace(outcome, failure="no checkpoint has been signed yet: nothing to verify with")
    outcome = replace(outcome, checkpoint=checkpoint)
    if leaf_index >= checkpoint.tree_size:
        return replace(
            outcome,
            failure=(
                f"leaf {leaf_index} is not covered by a signed checkpoint yet: the latest, checkpoint "
                f"{checkpoint.tree_size}, covers leaves 0 to {checkpoint.tree_size - 1} (the checkpointer signs "
                "the next one within ENTENTE_AUDIT_CHECKPOINT_INTERVAL_SECONDS)"
            ),
        )
    proof = inclusion_proof(session, leaf_index=leaf_index, tree_size=checkpoint.tree_size)
    outcome = replace(outcome, proof=[_b64(p) for p in proof])
    stored = session.get(AuditNode, node_key(Node(0, leaf_index)))
    try:
        key = load_log_key(settings).verifier_key
    except AuditError as exc:
        return replace(outcome, failure=f"the log's signing key cannot be loaded: {exc.detail}")
    outcome = replace(outcome, key=key.encode())
    try:
        if stored is not None and stored.hash != leaf_hash:
            raise LeafMismatch(
                f"record {record.id} no longer hashes to leaf {leaf_index} as it was logged: "
                "its content was changed after it was logged"
            )
        verify_record(entry, leaf_index=leaf_index, proof=proof, checkpoint_note=checkpoint.note, log_key=key)
    except VerificationFailed as exc:
        return replace(outcome, failure=f"{type(exc).__name__}: {exc.detail}")
    return replace(outcome, verified=True)


def leaf_indices(session: Session, record_ids: Iterable[int]) -> dict[int, int]:
    """record id -> leaf index, for the records that have one (the checkpointer sequences within a second)."""
    ids = list(record_ids)
    if not ids:
        return {}
    rows = session.exec(select(AuditLeaf.record_id, AuditLeaf.leaf_index).where(col(AuditLeaf.record_id).in_(ids)))
    return dict(rows.all())


# --- the policy dry run --------------------------------------------------------------------------


@dataclass(frozen=True)
class DryRun:
    """What applying the documents would change; nothing was applied."""

    documents: list[str]
    changes: list[AccessChange]
    partners: dict[str, str]
    """partner id -> slug, to label the changes."""

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.change == kind)


def policy_dry_run(session: Session, *, admin: Admin, actor: Actor, name: str, text: str, keep_others: bool) -> DryRun:
    """`entente policy diff` over a pasted document: alone the whole set, or (``keep_others``) replacing the
    document of that name in the set in force. Operators only; raises ``PolicyError`` naming file, rule, field."""
    admin.require_operator()
    name = name.strip() or "console.yaml"
    if len(text) > MAX_POLICY_TEXT:
        raise InvalidValue(f"the policy document is longer than {MAX_POLICY_TEXT} characters")
    text = text.replace("\r\n", "\n")  # browsers send textarea lines with CRLF
    documents = [(name, text)]
    if keep_others:
        current = session.exec(select(PolicyVersion).order_by(col(PolicyVersion.id).desc()).limit(1)).first()
        in_force = [(d["name"], d["text"]) for d in (current.documents if current else [])]
        documents = [(n, text if n == name else t) for n, t in in_force]
        if name not in {n for n, _ in in_force}:
            documents.append((name, text))
    slugs = dict(session.exec(select(Partner.id, Partner.slug)).all())
    changes = dry_run(session, documents=documents, actor=actor)
    return DryRun([n for n, _ in documents], changes, slugs)
