"""Who is using the console, checked against the database on every request, and what they may see.

Two roles: ``operator`` sees every partner, workspace, policy and the whole audit log;
``partner_admin`` sees only their own partner (its people, IdP connections, audit records) and may
use the kill switch on its people. A partner admin asking for another partner's person gets the
same 404 as for a missing one (no existence oracle); an operator-only page answers 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlmodel import Session, select

from broker.console.models import ConsoleAdmin
from broker.console.oidc import CONSOLE_WORKSPACE
from broker.console.passwords import hash_password, verify_password
from broker.console.session import SignedIn
from broker.errors import BrokerError, Forbidden
from broker.lifecycle.grants import AccessGrant
from broker.lifecycle.suspensions import suspended_subjects
from broker.scim.models import ScimUser
from broker.sessions.models import LoginSession
from broker.settings import Settings
from broker.tenants.models import Partner
from broker.types import utcnow
from broker.workspaces.models import Workspace

__all__ = [
    "ADMIN_ROLE",
    "BOOTSTRAP_ADMIN",
    "Admin",
    "LoginRequired",
    "authenticate_local",
    "ensure_bootstrap_admin",
    "resolve",
]

BOOTSTRAP_ADMIN = "admin"
ADMIN_ROLE = "admin"
"""The role a policy grants in ``entente-console`` to make someone a console admin."""


class LoginRequired(BrokerError):
    """No signed-in admin (or one no longer allowed): the console answers with its sign-in page."""

    status = 401


@dataclass(frozen=True)
class Admin:
    """A console user whose rights were just confirmed."""

    name: str
    role: Literal["operator", "partner_admin"]
    partner_id: str | None
    """The partner a partner admin administers; ``None`` for an operator."""
    partner_slug: str | None
    kind: Literal["local", "oidc"]

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden("this page is for Entente's operators")

    def sees_partner(self, partner_id: str) -> bool:
        return self.is_operator or partner_id == self.partner_id


def ensure_bootstrap_admin(session: Session, *, settings: Settings) -> None:
    """Create operator ``admin`` from ``ENTENTE_BOOTSTRAP_ADMIN_PASSWORD`` if it is set and no such admin exists."""
    if settings.bootstrap_admin_password is None or session.get(ConsoleAdmin, BOOTSTRAP_ADMIN) is not None:
        return
    password = settings.bootstrap_admin_password.get_secret_value()
    session.add(ConsoleAdmin(username=BOOTSTRAP_ADMIN, password_hash=hash_password(password), role="operator"))
    session.commit()


def authenticate_local(session: Session, *, username: str, password: str) -> ConsoleAdmin | None:
    """The local admin if the password matches (constant work whether or not the name exists); records the login."""
    row = session.get(ConsoleAdmin, username.strip()[:64])
    if not verify_password(password, row.password_hash if row else None) or row is None:
        return None
    row.last_login_at = utcnow()
    session.add(row)
    session.commit()
    return row


def _slug(session: Session, partner_id: str | None) -> str | None:
    if partner_id is None:
        return None
    partner = session.get(Partner, partner_id)
    return partner.slug if partner else None


def resolve(session: Session, *, settings: Settings, user: SignedIn | None) -> Admin:
    """The admin the cookie names, if still allowed; else ``LoginRequired``.

    An OIDC admin needs a live Entente login session, an active SCIM person, no kill-switch
    suspension, and a grant of role ``admin`` in ``entente-console`` (so policy decides, and a
    leaver or a kill switch signs them out of the console at once).
    """
    if user is None:
        raise LoginRequired("sign in to use the console")
    if user.kind == "local":
        row = session.get(ConsoleAdmin, user.name)
        if row is None:
            raise LoginRequired("this admin no longer exists")
        role: Literal["operator", "partner_admin"] = "operator" if row.role == "operator" else "partner_admin"
        return Admin(row.username, role, row.partner_id, _slug(session, row.partner_id), "local")
    if not (user.partner_id and user.subject_id and user.sid):
        raise LoginRequired("sign in again")
    login = session.get(LoginSession, user.sid)
    now = utcnow()
    if login is None or login.ended_at is not None or login.expires_at <= now or login.subject_id != user.subject_id:
        raise LoginRequired("your Entente session has ended; sign in again")
    person = session.exec(
        select(ScimUser).where(ScimUser.partner_id == user.partner_id, ScimUser.id == user.subject_id)
    ).first()
    grant = session.exec(
        select(AccessGrant)
        .join(Workspace, Workspace.id == AccessGrant.workspace_id)  # type: ignore[arg-type]
        .where(
            AccessGrant.partner_id == user.partner_id,
            AccessGrant.subject_id == user.subject_id,
            Workspace.slug == CONSOLE_WORKSPACE,
        )
    ).first()
    if (
        person is None
        or not person.active
        or grant is None
        or grant.role != ADMIN_ROLE
        or (grant.until is not None and grant.until <= now)
        or suspended_subjects(session, partner_id=user.partner_id, subject_ids=[user.subject_id])
    ):
        raise LoginRequired("you are no longer a console admin")
    slug = _slug(session, user.partner_id)
    role = "operator" if slug is not None and slug == settings.console_operator_partner else "partner_admin"
    return Admin(person.user_name, role, None if role == "operator" else user.partner_id, slug, "oidc")
