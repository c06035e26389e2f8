"""The account-takeover matrix of inbound federation: every way a partner IdP's assertion could land on a
person it does not own, each refused with its precise reason, and zero takeovers over the whole matrix.

Rows run ``bind_identity`` (the one place an upstream identity becomes an Entente person) against real
partners, people and connections on both databases; the IdP is played by the ``FederatedIdentity``
its adapter would hand over (the OIDC rows through ``OIDCAdapter._identity``, so claim parsing counts
too). The end-to-end versions through the real oidc-provider are in ``test_refusals.py`` and below
(``test_verified_flag_and_address_from_two_sources_are_not_combined``); ``tests/SECURITY.md`` lists both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.audit.log import Actor
from broker.federation.base import FederatedIdentity, FederationError, UnknownPerson, UntrustedIssuer
from broker.federation.binding import bind_identity
from broker.federation.models import BindingKey, IdPConnection
from broker.federation.oidc import OIDCAdapter, OIDCConfig
from broker.federation.service import add_oidc_connection
from broker.scim.models import ScimUser
from broker.settings import Settings
from broker.tenants.models import DomainPolicy
from tests.conftest import MakePartner, PartnerHandle
from tests.federation.browser import Browser
from tests.federation.conftest import FederateFactory, Tamper
from tests.federation.test_refusals import failure, no_sessions, refused

SHARED_ISSUER = "https://accounts.shared-idp.example"
"""A multi-tenant IdP (think Google or Entra common) that two partners both connect."""


@dataclass
class Env:
    """A victim partner and an attacker partner (enforcing), a warn-only partner, and their people."""

    engine: Engine
    settings: Settings
    victim: PartnerHandle
    attacker: PartnerHandle
    lax: PartnerHandle
    people: dict[str, str]
    """Every person of the matrix by label: none of them may ever be bound."""

    def connect(
        self, partner: PartnerHandle, key: BindingKey, *, issuer: str | None = None, **extra: Any
    ) -> IdPConnection:
        with Session(self.engine, expire_on_commit=False) as session:
            return add_oidc_connection(
                session=session, settings=self.settings, partner_slug=partner.slug,
                issuer=issuer or f"https://idp.{partner.slug}.example", client_id="entente", client_secret="s",
                actor=Actor("cli", "tests"), binding_key=key, name=f"c{uuid.uuid4().hex[:8]}", **extra,
            )  # fmt: skip


def claims_identity(connection: IdPConnection, **claims: Any) -> FederatedIdentity:
    """What the OIDC adapter of ``connection`` makes of these ID token / userinfo claims."""
    adapter = OIDCAdapter(
        OIDCConfig(
            connection_id=connection.id,
            tenant_id=connection.partner_id,
            issuer=connection.issuer or "",
            client_id="entente",
            client_secret=SecretStr("s"),
            redirect_uri="https://entente.example/cb",
        )  # fmt: skip
    )
    return adapter._identity({"iss": connection.issuer, "iat": 1_700_000_000, **claims})


@pytest.fixture
def env(make_partner: MakePartner, engine: Engine, settings: Settings) -> Env:
    victim, attacker = make_partner(), make_partner()
    lax = make_partner(domain_policy=DomainPolicy.WARN)
    people = {
        "victim.ceo": victim.create_user("ceo", externalId="victim-sub")["id"],
        "attacker.kim": attacker.create_user("kim", externalId="kim-sub")["id"],
        "attacker.left": attacker.create_user("left", externalId="left-sub", active=False)["id"],
        "attacker.one": attacker.create_user("one", externalId="dup")["id"],
        "attacker.two": attacker.create_user("two", externalId="dup")["id"],
        "lax.outside": lax.create_user("out", emails=[{"value": f"out@{lax.slug}-unverified.test", "primary": True}])[
            "id"
        ],
        "lax.subdomain": lax.create_user("sub", emails=[{"value": f"sub@eng.{lax.domain}", "primary": True}])["id"],
        "lax.lookalike": lax.create_user(
            "look", emails=[{"value": f"look@{lax.domain}.evil.example", "primary": True}]
        )["id"],
    }
    return Env(engine, settings, victim, attacker, lax, people)


Attempt = Callable[[Env], tuple[IdPConnection, FederatedIdentity]]


def _unverified_email(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.EMAIL)
    return connection, claims_identity(connection, sub="s1", email=env.attacker.email("kim"), email_verified=False)


def _email_verified_as_a_string(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.EMAIL)
    return connection, claims_identity(connection, sub="s2", email=env.attacker.email("kim"), email_verified="true")


def _same_sub_from_another_partners_issuer(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    env.connect(env.victim, BindingKey.EXTERNAL_ID)
    connection = env.connect(env.attacker, BindingKey.EXTERNAL_ID)
    return connection, claims_identity(connection, sub="victim-sub")


def _same_sub_at_a_shared_multi_tenant_issuer(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    env.connect(env.victim, BindingKey.EXTERNAL_ID, issuer=SHARED_ISSUER)
    connection = env.connect(env.attacker, BindingKey.EXTERNAL_ID, issuer=SHARED_ISSUER)
    return connection, claims_identity(connection, sub="victim-sub")


def _identity_of_another_issuer(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    victims = env.connect(env.victim, BindingKey.EXTERNAL_ID)
    mine = env.connect(env.attacker, BindingKey.EXTERNAL_ID)
    identity = claims_identity(mine, sub="victim-sub")
    return victims, FederatedIdentity(
        tenant_id=victims.partner_id,
        issuer=mine.issuer or "",
        subject=identity.subject,
        email=None,
        email_verified=False,
    )


def _identity_of_another_partner(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    victims = env.connect(env.victim, BindingKey.EXTERNAL_ID, issuer=SHARED_ISSUER)
    return victims, FederatedIdentity(
        tenant_id=env.attacker.id, issuer=SHARED_ISSUER, subject="victim-sub", email=None, email_verified=False
    )


def _email_outside_the_verified_domains(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.lax, BindingKey.EMAIL)
    address = f"out@{env.lax.slug}-unverified.test"
    return connection, claims_identity(connection, sub="s3", email=address, email_verified=True)


def _email_in_a_subdomain(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.lax, BindingKey.EMAIL)
    return connection, claims_identity(connection, sub="s4", email=f"sub@eng.{env.lax.domain}", email_verified=True)


def _email_in_a_lookalike_domain(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.lax, BindingKey.EMAIL)
    address = f"look@{env.lax.domain}.evil.example"
    return connection, claims_identity(connection, sub="s5", email=address, email_verified=True)


def _email_in_a_homograph_domain(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.EMAIL)
    homograph = env.attacker.domain.replace("p", "\u0440", 1)  # Cyrillic er
    return connection, claims_identity(connection, sub="s6", email=f"kim@{homograph}", email_verified=True)


def _another_partners_domain(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.EMAIL)
    return connection, claims_identity(connection, sub="s7", email=env.victim.email("ceo"), email_verified=True)


def _another_partners_domain_with_jit(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.EXTERNAL_ID, jit=True)
    return connection, claims_identity(connection, sub="s8", email=env.victim.email("ceo"), email_verified=True)


def _another_partners_user_name(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.USER_NAME)
    return connection, claims_identity(connection, sub="s9", preferred_username=env.victim.email("ceo"))


def _another_partners_user_name_with_jit(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.USER_NAME, jit=True)
    claims = {"preferred_username": env.victim.email("ceo"), "email": env.attacker.email("new"), "email_verified": True}
    return connection, claims_identity(connection, sub="s10", **claims)


def _jit_merging_into_an_existing_address(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    """A new upstream subject with kim's (verified) address: JIT must not hand kim's account over."""
    connection = env.connect(env.attacker, BindingKey.EXTERNAL_ID, jit=True)
    return connection, claims_identity(connection, sub="s11", email=env.attacker.email("kim"), email_verified=True)


def _external_id_case_variant(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.EXTERNAL_ID)
    return connection, claims_identity(connection, sub="KIM-SUB")


def _reactivating_a_leaver(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.EXTERNAL_ID, jit=True)
    return connection, claims_identity(
        connection, sub="left-sub", email=env.attacker.email("left"), email_verified=True
    )


def _ambiguous_subject(env: Env) -> tuple[IdPConnection, FederatedIdentity]:
    connection = env.connect(env.attacker, BindingKey.EXTERNAL_ID)
    return connection, claims_identity(connection, sub="dup")


MATRIX: list[tuple[str, Attempt, type[FederationError], str]] = [
    ("unverified-email-claim", _unverified_email, UnknownPerson, "did not send a verified email address"),
    ("email-verified-string-true", _email_verified_as_a_string, UnknownPerson, "did not send a verified email"),
    ("same-sub-two-partner-issuers", _same_sub_from_another_partners_issuer, UnknownPerson, "directory at Entente"),
    ("same-sub-shared-issuer", _same_sub_at_a_shared_multi_tenant_issuer, UnknownPerson, "directory at Entente"),
    ("identity-of-another-issuer", _identity_of_another_issuer, UntrustedIssuer, "not asserted by the identity"),
    ("identity-of-another-partner", _identity_of_another_partner, UntrustedIssuer, "not asserted by the identity"),
    ("email-outside-verified-domains", _email_outside_the_verified_domains, UnknownPerson, "in a domain of your"),
    ("email-in-subdomain", _email_in_a_subdomain, UnknownPerson, "in a domain of your organisation"),
    ("email-in-lookalike-domain", _email_in_a_lookalike_domain, UnknownPerson, "in a domain of your organisation"),
    ("email-in-homograph-domain", _email_in_a_homograph_domain, UnknownPerson, "in a domain of your organisation"),
    ("another-partners-domain", _another_partners_domain, UnknownPerson, "in a domain of your organisation"),
    ("another-partners-domain-jit", _another_partners_domain_with_jit, UnknownPerson, "no account can be created"),
    ("another-partners-username", _another_partners_user_name, UnknownPerson, "directory at Entente"),
    ("another-partners-username-jit", _another_partners_user_name_with_jit, UnknownPerson, "could not be created"),
    ("jit-onto-an-existing-address", _jit_merging_into_an_existing_address, UnknownPerson, "could not be created"),
    ("external-id-case-variant", _external_id_case_variant, UnknownPerson, "directory at Entente"),
    ("reactivating-a-leaver", _reactivating_a_leaver, UnknownPerson, "deactivated"),
    ("ambiguous-subject", _ambiguous_subject, UnknownPerson, "more than one person"),
]


def _attempt(env: Env, attempt: Attempt) -> str | FederationError:
    """The subject bound (a takeover), or the refusal; nothing an attempt writes is kept."""
    connection, identity = attempt(env)
    with Session(env.engine) as session:
        try:
            return bind_identity(
                session=session, settings=env.settings, connection=connection, identity=identity
            ).subject_id
        except FederationError as error:
            return error
        finally:
            session.rollback()


@pytest.mark.parametrize(("attempt", "refusal", "reason"), [row[1:] for row in MATRIX], ids=[row[0] for row in MATRIX])
def test_takeover_is_refused(env: Env, attempt: Attempt, refusal: type[FederationError], reason: str) -> None:
    outcome = _attempt(env, attempt)
    assert isinstance(outcome, refusal), outcome
    assert reason in outcome.detail, outcome.detail


def test_the_whole_matrix_makes_zero_takeovers(env: Env) -> None:
    takeovers = [(name, result) for name, attempt, _, _ in MATRIX if isinstance(result := _attempt(env, attempt), str)]
    assert takeovers == []
    with Session(env.engine) as session:  # and no attempt left a person behind (JIT rows included)
        for partner in (env.victim, env.attacker, env.lax):
            ids = set(session.exec(select(ScimUser.id).where(ScimUser.partner_id == partner.id)).all())
            assert ids == {pid for label, pid in env.people.items() if label.startswith(_label(env, partner))}


def _label(env: Env, partner: PartnerHandle) -> str:
    return {env.victim.id: "victim.", env.attacker.id: "attacker.", env.lax.id: "lax."}[partner.id]


# --- end to end, through the real oidc-provider ------------------------------------------------------


def test_verified_flag_and_address_from_two_sources_are_not_combined(
    federate: FederateFactory, browser: Browser, tamper: Tamper, audit: Callable[[str], list[Any]], engine: Engine
) -> None:
    """The ID token says ``email_verified: true`` without an address; userinfo gives the address,
    unverified. Entente takes the address and its flag from the same source: refused."""
    fed = federate(binding=BindingKey.EMAIL)
    sub = fed.account(email=fed.partner.email("una"), verified=False)
    fed.partner.create_user("una")
    tamper.publish_key()
    tamper.token = lambda body: {
        **body,
        "id_token": tamper.resign(body["id_token"], email=None, email_verified=True),
    }
    refused(browser.login(fed.start, sub), "verified email address in a domain of your organisation")
    assert tamper.userinfo_calls == 1
    failure(audit, fed, "UnknownPerson")
    no_sessions(engine, fed.partner.id)
