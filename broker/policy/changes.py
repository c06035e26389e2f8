"""What a policy set would do: who gains, loses or changes access; for `entente policy diff/apply` and the console.

``policy_changes`` stores the set and re-decides every partner's people in the caller's open
transaction (the caller commits to apply, or rolls back); ``dry_run`` always rolls back, so nothing
is applied, stored or audited, and no delivery is queued.
"""

from __future__ import annotations

from sqlmodel import Session, select

from broker.audit.log import Actor
from broker.lifecycle.engine import AccessChange, reconcile_partner
from broker.policy.store import save_policies
from broker.tenants.models import Partner

__all__ = ["dry_run", "policy_changes"]


def policy_changes(session: Session, *, documents: list[tuple[str, str]], actor: Actor) -> list[AccessChange]:
    """Store the policies and re-decide every partner's people, in the session's open transaction.

    Raises ``PolicyError`` (naming file, rule and field) for an invalid set, before anything is decided.
    """
    policies = save_policies(session, documents=documents, actor=actor)
    changes: list[AccessChange] = []
    for partner_id in session.exec(select(Partner.id)).all():
        changes += reconcile_partner(session, partner_id=partner_id, policies=policies, cause="policy")
    return changes


def dry_run(session: Session, *, documents: list[tuple[str, str]], actor: Actor) -> list[AccessChange]:
    """``policy_changes``, then roll back: exactly what applying would change, with nothing applied."""
    try:
        return policy_changes(session, documents=documents, actor=actor)
    finally:
        session.rollback()
