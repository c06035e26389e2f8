"""The demo `entente demo` sets up: partner acme, a demo workspace and the policy linking them.

The demo workspace is real, not a stub: a SCIM workspace whose downstream app is Entente's own
SCIM server, in a separate tenant ``demo-wiki``. A user pushed to acme in group ``eng`` is therefore
provisioned, through the engine, outbox and SCIM connector, into that tenant, where it can be read
back with the ``demo-wiki`` token; a leaver disappears from it. Nothing outside the machine is needed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, select

from broker.audit.log import Actor
from broker.errors import BrokerError
from broker.lifecycle.engine import reconcile_partner
from broker.policy.store import PolicyVersion, save_policies
from broker.settings import Settings
from broker.tenants.models import DomainPolicy, Partner
from broker.tenants.service import IssuedToken, add_partner, get_partner, issue_scim_token
from broker.workspaces.service import add_workspace

__all__ = ["DemoSetup", "set_up_demo"]

DEMO_POLICY = Path(__file__).resolve().parent.parent / "policies" / "examples" / "demo.yaml"


@dataclass(frozen=True)
class DemoSetup:
    """The token partner IT would paste into their IdP, and whether this run created the workspace."""

    acme_token: IssuedToken
    workspace_created: bool


def _ensure_partner(session: Session, *, slug: str, name: str, domain: str, policy: DomainPolicy, actor: Actor) -> None:
    try:
        get_partner(session=session, slug=slug)
    except BrokerError:
        add_partner(session=session, slug=slug, name=name, domains=[domain], actor=actor, domain_policy=policy)


def set_up_demo(session: Session, *, settings: Settings, actor: Actor) -> DemoSetup:
    """Idempotent: a second run only issues a new acme token."""
    _ensure_partner(
        session, slug="acme", name="Acme Corp (demo)", domain="acme.test", policy=DomainPolicy.ENFORCE, actor=actor
    )
    created = False
    if session.exec(select(Partner.id).where(Partner.slug == "demo-wiki")).first() is None:
        # The downstream app's own tenant accepts acme's addresses (warn-only): it is a workspace, not a partner.
        _ensure_partner(
            session,
            slug="demo-wiki",
            name="Demo wiki (a workspace)",
            domain="demo-wiki.test",
            policy=DomainPolicy.WARN,
            actor=actor,
        )
        wiki_token = issue_scim_token(
            session=session, slug="demo-wiki", expires_in=dt.timedelta(days=3650), actor=actor, label="demo workspace"
        )
        add_workspace(
            session,
            settings=settings,
            slug="demo-wiki",
            name="Demo wiki (Entente's own SCIM server, tenant demo-wiki)",
            connector="scim",
            values={"base_url": f"{settings.public_base_url.rstrip('/')}/scim/v2", "token": wiki_token.secret_text},
            actor=actor,
        )
        created = True
    if session.exec(select(PolicyVersion.id).limit(1)).first() is None:
        policies = save_policies(session, documents=[(DEMO_POLICY.name, DEMO_POLICY.read_text())], actor=actor)
        acme = get_partner(session=session, slug="acme")
        reconcile_partner(session, partner_id=acme.id, policies=policies, cause="policy")
        session.commit()
    token = issue_scim_token(session=session, slug="acme", expires_in=dt.timedelta(days=30), actor=actor, label="demo")
    return DemoSetup(acme_token=token, workspace_created=created)
