"""Identity binding rules, called directly (the end-to-end versions are in test_refusals.py): the
takeover matrix on the binding side, ambiguity, suspension, and what the adapter passes as verified."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.audit.log import Actor
from broker.federation.base import FederatedIdentity, UnknownPerson, UntrustedIssuer
from broker.federation.binding import bind_identity, verified_partner_email
from broker.federation.models import BindingKey, IdPConnection
from broker.federation.oidc import OIDCAdapter, OIDCConfig
from broker.federation.service import add_oidc_connection
from broker.settings import Settings
from broker.tenants.models import Partner, PartnerStatus
from tests.conftest import MakePartner, PartnerHandle

ISSUER = "https://idp.example.com"


def _connection(
    engine: Engine, settings: Settings, partner: PartnerHandle, key: BindingKey, **extra: object
) -> IdPConnection:
    with Session(engine, expire_on_commit=False) as session:
        return add_oidc_connection(
            session=session, settings=settings, partner_slug=partner.slug, issuer=ISSUER, client_id="c",
            client_secret="s", actor=Actor("cli", "tests"), binding_key=key, **extra,  # type: ignore[arg-type]
        )  # fmt: skip


def _identity(partner: PartnerHandle, *, subject: str = "sub-1", email: str | None = None, verified: bool = True,
              issuer: str = ISSUER, **attributes: tuple[str, ...]) -> FederatedIdentity:  # fmt: skip
    return FederatedIdentity(
        tenant_id=partner.id, issuer=issuer, subject=subject, email=email, email_verified=verified,
        attributes=attributes, authn_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


def _bind(engine: Engine, settings: Settings, connection: IdPConnection, identity: FederatedIdentity) -> str:
    with Session(engine) as session:
        bound = bind_identity(session=session, settings=settings, connection=connection, identity=identity)
        session.rollback()
        return bound.subject_id


def test_external_id_is_exact(make_partner: MakePartner, engine: Engine, settings: Settings) -> None:
    partner = make_partner()
    person = partner.create_user("a", externalId="Sub-CaseSensitive")
    connection = _connection(engine, settings, partner, BindingKey.EXTERNAL_ID)
    assert _bind(engine, settings, connection, _identity(partner, subject="Sub-CaseSensitive")) == person["id"]
    with pytest.raises(UnknownPerson):
        _bind(engine, settings, connection, _identity(partner, subject="sub-casesensitive"))


def test_two_people_matching_is_a_refusal(make_partner: MakePartner, engine: Engine, settings: Settings) -> None:
    partner = make_partner()
    partner.create_user("one", externalId="shared")
    partner.create_user("two", externalId="shared")
    connection = _connection(engine, settings, partner, BindingKey.EXTERNAL_ID)
    with pytest.raises(UnknownPerson, match="more than one person"):
        _bind(engine, settings, connection, _identity(partner, subject="shared"))


def test_an_identity_of_another_partner_or_issuer_is_untrusted(
    make_partner: MakePartner, engine: Engine, settings: Settings
) -> None:
    partner, other = make_partner(), make_partner()
    partner.create_user("a", externalId="sub-1")
    connection = _connection(engine, settings, partner, BindingKey.EXTERNAL_ID)
    with pytest.raises(UntrustedIssuer):
        _bind(engine, settings, connection, _identity(other))
    with pytest.raises(UntrustedIssuer):
        _bind(engine, settings, connection, _identity(partner, issuer="https://other-idp.example.com"))


def test_a_suspended_partner_signs_nobody_in(make_partner: MakePartner, engine: Engine, settings: Settings) -> None:
    partner = make_partner()
    partner.create_user("a", externalId="sub-1")
    connection = _connection(engine, settings, partner, BindingKey.EXTERNAL_ID)
    with Session(engine) as session:
        row = session.get(Partner, partner.id)
        assert row is not None
        row.status = PartnerStatus.SUSPENDED
        session.add(row)
        session.commit()
    with pytest.raises(UntrustedIssuer, match="suspended"):
        _bind(engine, settings, connection, _identity(partner))


def test_user_name_binding_needs_its_claim(make_partner: MakePartner, engine: Engine, settings: Settings) -> None:
    partner = make_partner()
    person = partner.create_user("ann")
    connection = _connection(engine, settings, partner, BindingKey.USER_NAME, username_claim="upn")
    with pytest.raises(UnknownPerson, match="'upn'"):
        _bind(engine, settings, connection, _identity(partner, preferred_username=(partner.email("ann"),)))
    bound = _bind(engine, settings, connection, _identity(partner, upn=(partner.email("ANN"),)))
    assert bound == person["id"]


@pytest.mark.parametrize(
    ("email", "verified", "domains", "expected"),
    [
        ("a@acme.test", True, {"acme.test"}, "a@acme.test"),
        ("a@ACME.test", True, {"acme.test"}, "a@ACME.test"),
        ("a@acme.test", False, {"acme.test"}, None),
        ("a@eng.acme.test", True, {"acme.test"}, None),
        ("a@acme.test.evil.example", True, {"acme.test"}, None),
        ("acme.test", True, {"acme.test"}, None),
        ("@acme.test", True, {"acme.test"}, None),
        (None, True, {"acme.test"}, None),
    ],
)
def test_only_a_verified_address_in_a_verified_domain_counts(
    email: str | None, verified: bool, domains: set[str], expected: str | None
) -> None:
    identity = FederatedIdentity(tenant_id="t", issuer=ISSUER, subject="s", email=email, email_verified=verified)
    assert verified_partner_email(identity, frozenset(domains)) == expected


@pytest.mark.parametrize(("claim", "verified"), [(True, True), ("true", False), (1, False), (None, False)])
def test_email_verified_must_be_json_true(claim: object, verified: bool) -> None:
    """Some IdPs send the string "true": it is not the boolean the spec defines, so it does not vouch."""
    adapter = OIDCAdapter(
        OIDCConfig(
            connection_id="x.oidc",
            tenant_id="t",
            issuer=ISSUER,
            client_id="c",
            client_secret=SecretStr("s"),
            redirect_uri="https://entente.example/login/callback/x.oidc",
        )  # fmt: skip
    )
    claims = {
        "iss": ISSUER,
        "sub": str(uuid.uuid4()),
        "iat": 1_700_000_000,
        "email": "a@acme.test",
        "email_verified": claim,
    }
    identity = adapter._identity(claims)
    assert identity.email_verified is verified
    assert identity.authn_at == dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)
    assert "iat" not in identity.attributes and identity.attributes["email"] == ("a@acme.test",)


def test_a_person_under_the_kill_switch_cannot_sign_in(
    make_partner: MakePartner, engine: Engine, settings: Settings
) -> None:
    from broker.lifecycle.killswitch import lift_person, suspend_partner, suspend_person

    partner = make_partner()
    person = partner.create_user("k", externalId="sub-k")
    partner.create_user("other", externalId="sub-o")
    connection = _connection(engine, settings, partner, BindingKey.EXTERNAL_ID, jit=True)
    operator = Actor("cli", "tests")
    with Session(engine) as session:
        suspend_person(session, partner_slug=partner.slug, person=person["id"], reason="stolen laptop", actor=operator)
    with pytest.raises(UnknownPerson, match="suspended by its operator"):
        _bind(engine, settings, connection, _identity(partner, subject="sub-k"))
    assert _bind(engine, settings, connection, _identity(partner, subject="sub-o")), "only that person is refused"
    with Session(engine) as session:
        lift_person(session, partner_slug=partner.slug, person=person["id"], reason="found", actor=operator)
    assert _bind(engine, settings, connection, _identity(partner, subject="sub-k")) == person["id"]
    with Session(engine) as session:
        suspend_partner(session, partner_slug=partner.slug, reason="contract ended", actor=operator)
    with pytest.raises(UnknownPerson, match="suspended by its operator"):
        _bind(engine, settings, connection, _identity(partner, subject="sub-o"))
    with pytest.raises(UnknownPerson, match="suspended by its operator"):  # nor is anyone created just in time
        _bind(engine, settings, connection, _identity(partner, subject="sub-new", email=f"new@{partner.domain}"))
