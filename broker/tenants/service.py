"""Partner and SCIM-credential operations; keyword-only, with the session explicit."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from broker.audit.log import Actor, append_audit
from broker.errors import BadRequest, Conflict, NotFound, Unauthorized
from broker.tenants.models import DomainPolicy, Partner, PartnerDomain, PartnerStatus, ScimToken
from broker.tenants.token_cache import AuthenticatedToken
from broker.types import utcnow

__all__ = [
    "IssuedToken",
    "add_partner",
    "authenticate_scim_token",
    "confirm_scim_token",
    "get_partner",
    "issue_scim_token",
    "list_partners",
    "list_tokens",
    "normalize_domain",
    "partner_domains",
    "revoke_scim_token",
    "set_domain_policy",
]

TOKEN_PREFIX = "ent_scim_"  # noqa: S105 (a public prefix, not a secret)
_TOKEN_RE = re.compile(r"\Aent_scim_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")
_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_DOMAIN_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# A fixed digest compared when no token row matches, so a wrong id costs the same time as a wrong secret.
_DUMMY_SHA256 = hashlib.sha256(b"entente-no-such-token").hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued SCIM token; ``secret_text`` exists only here and is never stored."""

    token: ScimToken
    secret_text: str


def normalize_domain(domain: str) -> str:
    """Lower-case IDNA form of an email domain; raises BadRequest on anything that is not a hostname."""
    text = domain.strip().rstrip(".").lower()
    try:
        ascii_form = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise BadRequest(f"'{domain}' is not a valid domain name") from exc
    labels = ascii_form.split(".")
    if len(labels) < 2 or len(ascii_form) > 253 or not all(_DOMAIN_LABEL_RE.match(label) for label in labels):
        raise BadRequest(f"'{domain}' is not a valid domain name")
    return ascii_form


def add_partner(
    *, session: Session, slug: str, name: str, domains: list[str], actor: Actor, domain_policy: DomainPolicy
) -> Partner:
    """Create a partner with its verified domains. A domain already held by another partner is refused."""
    if not _SLUG_RE.match(slug):
        raise BadRequest(f"slug '{slug}' must be 1-64 lower-case letters, digits or inner hyphens")
    if session.exec(select(Partner).where(Partner.slug == slug)).first() is not None:
        raise Conflict(f"partner '{slug}' already exists")
    normalized = sorted({normalize_domain(d) for d in domains})
    taken = session.exec(select(PartnerDomain).where(col(PartnerDomain.domain).in_(normalized))).all()
    if taken:
        raise Conflict(f"domain(s) already verified by another partner: {', '.join(d.domain for d in taken)}")
    partner = Partner(slug=slug, name=name, domain_policy=domain_policy.value)
    session.add(partner)
    session.flush()
    for domain in normalized:
        session.add(PartnerDomain(partner_id=partner.id, domain=domain))
    append_audit(
        session,
        actor=actor,
        action="partner.created",
        partner_id=partner.id,
        resource_type="Partner",
        resource_id=partner.id,
        after={"slug": slug, "name": name, "domains": normalized, "domain_policy": domain_policy.value},
    )
    session.commit()
    return partner


def get_partner(*, session: Session, slug: str) -> Partner:
    """The partner with this slug, or NotFound."""
    partner = session.exec(select(Partner).where(Partner.slug == slug)).first()
    if partner is None:
        raise NotFound(f"no partner '{slug}'")
    return partner


def list_partners(*, session: Session) -> list[Partner]:
    """Every partner, by slug."""
    return list(session.exec(select(Partner).order_by(col(Partner.slug))).all())


def partner_domains(*, session: Session, partner_id: str) -> list[str]:
    """The partner's verified domains, sorted."""
    rows = session.exec(
        select(PartnerDomain.domain).where(PartnerDomain.partner_id == partner_id).order_by(PartnerDomain.domain)
    ).all()
    return list(rows)


def set_domain_policy(*, session: Session, slug: str, policy: DomainPolicy, actor: Actor) -> Partner:
    """Switch a partner between refusing and warning on out-of-domain users."""
    partner = get_partner(session=session, slug=slug)
    before = partner.domain_policy
    partner.domain_policy = policy.value
    session.add(partner)
    append_audit(
        session,
        actor=actor,
        action="partner.domain_policy_changed",
        partner_id=partner.id,
        resource_type="Partner",
        resource_id=partner.id,
        detail={"before": before, "after": policy.value},
    )
    session.commit()
    return partner


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def issue_scim_token(
    *, session: Session, slug: str, expires_in: dt.timedelta, actor: Actor, label: str | None = None
) -> IssuedToken:
    """Mint a 256-bit bearer token for a partner. The returned text is the only copy of the secret.

    A SHA-256 of the secret suffices at rest: the secret is 256 random bits, so there is nothing a slow
    password hash would protect against that the entropy does not already.
    """
    if expires_in <= dt.timedelta(0):
        raise BadRequest("a token must expire in the future")
    if expires_in > dt.datetime.max.replace(tzinfo=dt.UTC) - utcnow():
        raise BadRequest("a token must expire before the year 10000")
    partner = get_partner(session=session, slug=slug)
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    token = ScimToken(
        id=token_id,
        partner_id=partner.id,
        secret_sha256=_sha256(secret),
        label=label,
        expires_at=utcnow() + expires_in,
    )
    session.add(token)
    append_audit(
        session,
        actor=actor,
        action="scim_token.issued",
        partner_id=partner.id,
        resource_type="ScimToken",
        resource_id=token_id,
        detail={"expires_at": token.expires_at.isoformat(), "label": label},
    )
    session.commit()
    return IssuedToken(token=token, secret_text=f"{TOKEN_PREFIX}{token_id}_{secret}")


def list_tokens(*, session: Session, slug: str) -> list[ScimToken]:
    """A partner's tokens, newest first, secrets excluded by construction."""
    partner = get_partner(session=session, slug=slug)
    return list(
        session.exec(
            select(ScimToken).where(ScimToken.partner_id == partner.id).order_by(col(ScimToken.created_at).desc())
        ).all()
    )


def revoke_scim_token(*, session: Session, slug: str, token_id: str, actor: Actor) -> ScimToken:
    """Revoke one of the partner's tokens at once. Revoking twice is harmless."""
    partner = get_partner(session=session, slug=slug)
    token = session.exec(select(ScimToken).where(ScimToken.id == token_id, ScimToken.partner_id == partner.id)).first()
    if token is None:
        raise NotFound(f"partner '{slug}' has no token '{token_id}'")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
        append_audit(
            session,
            actor=actor,
            action="scim_token.revoked",
            partner_id=partner.id,
            resource_type="ScimToken",
            resource_id=token.id,
        )
        session.commit()
    return token


def _refuse_unusable(*, revoked_at: dt.datetime | None, expires_at: dt.datetime, status: str) -> None:
    """The refusals a correctly presented token can still meet, each saying why."""
    if revoked_at is not None:
        raise Unauthorized("bearer token has been revoked")
    if expires_at <= utcnow():
        raise Unauthorized("bearer token has expired")
    if status != PartnerStatus.ACTIVE:
        raise Unauthorized("partner is suspended")


def authenticate_scim_token(*, session: Session, presented: str) -> AuthenticatedToken:
    """Resolve a bearer token to its partner: the token alone decides the tenant.

    The id is looked up, then the secret's digest compared in constant time; an unknown id still
    costs one comparison. Every refusal says why, without saying whether the id exists. The first
    use in a minute is recorded (``last_used_at``) and committed here.
    """
    match = _TOKEN_RE.match(presented)
    if match is None:
        raise Unauthorized("malformed bearer token: expected 'ent_scim_<16 hex>_<43 base64url>'")
    token_id, secret = match.groups()
    found = session.exec(
        select(ScimToken, Partner).join(Partner, Partner.id == ScimToken.partner_id).where(ScimToken.id == token_id)
    ).first()
    token, partner = found if found is not None else (None, None)
    expected = token.secret_sha256 if token is not None else _DUMMY_SHA256
    valid = hmac.compare_digest(expected, _sha256(secret))
    if token is None or partner is None or not valid:
        raise Unauthorized("invalid bearer token")
    _refuse_unusable(revoked_at=token.revoked_at, expires_at=token.expires_at, status=partner.status)
    authenticated = AuthenticatedToken(
        token_id=token.id,
        partner_id=partner.id,
        partner_slug=partner.slug,
        domain_policy=partner.domain_policy,
        domains=frozenset(partner_domains(session=session, partner_id=partner.id)),
        expires_at=token.expires_at,
    )
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
        token.last_used_at = now  # coarse, so authentication is a write at most once a minute
        session.add(token)
        session.commit()
    return authenticated


_TOKENS = ScimToken.__table__.c  # type: ignore[attr-defined]
_PARTNERS = Partner.__table__.c  # type: ignore[attr-defined]
_TOKEN_STATE = (
    select(_TOKENS.revoked_at, _TOKENS.expires_at, _PARTNERS.status, _PARTNERS.domain_policy)
    .join(Partner.__table__, _PARTNERS.id == _TOKENS.partner_id)  # type: ignore[attr-defined]
    .where(_TOKENS.id == bindparam("token_id"))
)
"""Built once: it runs on every SCIM request."""


def confirm_scim_token(*, session: Session, token_id: str) -> str:
    """Re-check a token verified earlier (``broker.tenants.token_cache``) against its current row, in
    the caller's transaction: refused exactly as ``authenticate_scim_token`` would refuse it now.
    Returns the partner's current domain policy."""
    row = session.connection().execute(_TOKEN_STATE, {"token_id": token_id}).first()
    if row is None:
        raise Unauthorized("invalid bearer token")
    revoked_at, expires_at, status, domain_policy = row
    _refuse_unusable(revoked_at=revoked_at, expires_at=expires_at, status=status)
    return str(domain_policy)
