"""Applied policy sets, kept as versions: the newest is in force, the older ones are history."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, col, select

from broker.audit.log import Actor, append_audit, canonical_json
from broker.policy.loader import load_policy_documents
from broker.policy.model import PolicySet
from broker.types import UTCDateTime, utcnow

__all__ = ["PolicyVersion", "active_policies", "save_policies"]


class PolicyVersion(SQLModel, table=True):
    """One `entente policy apply`: the YAML documents as given, so any version can be re-read verbatim."""

    __tablename__ = "policy_version"

    id: int | None = Field(default=None, primary_key=True)
    documents: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """``[{"name": file name, "text": YAML}]`` in the order applied."""
    sha256: str = Field(max_length=64)
    applied_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    applied_by: str = Field(max_length=200)


_parsed: dict[str, PolicySet] = {}


def _parse(version: PolicyVersion) -> PolicySet:
    """Parse once per content per process: keyed by the documents' digest, so it can never go stale."""
    if version.sha256 not in _parsed:
        if len(_parsed) > 16:
            _parsed.clear()
        _parsed[version.sha256] = load_policy_documents([(d["name"], d["text"]) for d in version.documents])
    return _parsed[version.sha256]


def active_policies(session: Session) -> PolicySet:
    """The policy set in force; none applied yet means the empty set, which denies everything."""
    version = session.exec(select(PolicyVersion).order_by(col(PolicyVersion.id).desc()).limit(1)).first()
    if version is None:
        return load_policy_documents([])
    return _parse(version)


def save_policies(session: Session, *, documents: list[tuple[str, str]], actor: Actor) -> PolicySet:
    """Validate and store a new version in the caller's transaction; invalid documents store nothing."""
    policies = load_policy_documents(documents)
    stored: list[dict[str, Any]] = [{"name": name, "text": text} for name, text in documents]
    sha256 = hashlib.sha256(canonical_json(stored)).hexdigest()
    session.add(PolicyVersion(documents=stored, sha256=sha256, applied_by=f"{actor.kind}:{actor.id}"))
    append_audit(
        session,
        actor=actor,
        action="policy.applied",
        partner_id=None,
        resource_type="PolicySet",
        resource_id=sha256[:16],
        detail={"files": [name for name, _ in documents], "sha256": sha256},
    )
    session.flush()
    return policies
