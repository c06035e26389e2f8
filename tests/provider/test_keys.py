"""Signing keys: RFC 7517 JWKs, sealed at rest, rotated with publication before use (OIDC Core §10.1.1)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.provider.keys import key_ring, retention, rotate_signing_key
from broker.provider.models import SigningKey
from broker.settings import Settings
from broker.workspaces.sealing import open_sealed
from tests.provider.conftest import ISSUER, World, verify_jwt

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def empty_keys(engine: Engine) -> Iterator[Session]:
    """A session in which no key exists yet; rolled back afterwards, so the shared keys are untouched."""
    session = Session(engine, expire_on_commit=False)
    session.execute(delete(SigningKey))
    yield session
    session.rollback()
    session.close()


def _kids(ring_keys: tuple[dict[str, object], ...]) -> list[object]:
    return [key["kid"] for key in ring_keys]


def test_first_key_is_made_on_demand_and_sealed(empty_keys: Session, oidc_settings: Settings) -> None:
    ring = key_ring(empty_keys, settings=oidc_settings, now=T0)
    row = empty_keys.exec(select(SigningKey)).one()
    assert ring.kid == row.kid and _kids(ring.published) == [row.kid]
    private = ring.signing.as_dict(private=True)
    assert str(private["d"]) not in row.private_sealed and '"d"' not in row.private_sealed
    assert open_sealed(oidc_settings, row.private_sealed)["d"] == private["d"]
    assert "d" not in row.public_jwk and row.public_jwk["kid"] == row.kid
    assert key_ring(empty_keys, settings=oidc_settings, now=T0).kid == row.kid  # made once


def test_rotation_publishes_before_use_and_retires_after_tokens_expire(
    empty_keys: Session, oidc_settings: Settings
) -> None:
    old = key_ring(empty_keys, settings=oidc_settings, now=T0).kid
    new = rotate_signing_key(empty_keys, settings=oidc_settings, now=T0).kid
    lead = dt.timedelta(seconds=oidc_settings.oidc_key_publish_seconds)
    before = key_ring(empty_keys, settings=oidc_settings, now=T0 + lead - dt.timedelta(seconds=1))
    assert before.kid == old and _kids(before.published) == [new, old]  # published, not yet signing
    after = key_ring(empty_keys, settings=oidc_settings, now=T0 + lead)
    assert after.kid == new and _kids(after.published) == [new, old]  # old tokens still verify
    kept = key_ring(empty_keys, settings=oidc_settings, now=T0 + lead + retention(oidc_settings))
    assert _kids(kept.published) == [new, old]
    pruned = key_ring(
        empty_keys, settings=oidc_settings, now=T0 + lead + retention(oidc_settings) + dt.timedelta(seconds=1)
    )
    assert _kids(pruned.published) == [new]
    assert [r.kid for r in empty_keys.exec(select(SigningKey)).all()] == [new]


def test_a_key_past_its_rotation_age_gets_a_successor(empty_keys: Session, oidc_settings: Settings) -> None:
    old = key_ring(empty_keys, settings=oidc_settings, now=T0).kid
    aged = T0 + dt.timedelta(days=oidc_settings.oidc_key_rotation_days)
    ring = key_ring(empty_keys, settings=oidc_settings, now=aged)
    assert ring.kid == old and len(ring.published) == 2  # the successor is published first
    assert key_ring(empty_keys, settings=oidc_settings, now=aged).published == ring.published  # only one successor
    lead = dt.timedelta(seconds=oidc_settings.oidc_key_publish_seconds)
    assert key_ring(empty_keys, settings=oidc_settings, now=aged + lead).kid != old


def test_immediate_rotation_signs_with_the_new_key_at_once(empty_keys: Session, oidc_settings: Settings) -> None:
    key_ring(empty_keys, settings=oidc_settings, now=T0)
    new = rotate_signing_key(empty_keys, settings=oidc_settings, now=T0, immediate=True).kid
    assert key_ring(empty_keys, settings=oidc_settings, now=T0 + dt.timedelta(milliseconds=1)).kid == new


def test_key_rotation_mid_flow(world: World) -> None:
    """A code issued before a rotation is exchanged after it: the ID token is signed by the new key,
    and the access token issued before the rotation still verifies against the JWKS."""
    alice = world.person("alice")
    world.login(alice["id"])
    rp = world.client()
    earlier = rp.login_flow()
    old_kid = json.loads(_header(earlier["id_token"]))["kid"]
    code = rp.code()
    with Session(world.engine, expire_on_commit=False) as session:
        key_ring(session, settings=world.settings)
        new_kid = rotate_signing_key(session, settings=world.settings, immediate=True).kid
        session.commit()
    tokens = rp.exchange(code).json()
    assert json.loads(_header(tokens["id_token"]))["kid"] == new_kid != old_kid
    verify_jwt(world.browser, tokens["id_token"], typ="JWT", iss=ISSUER, aud=rp.client_id)
    verify_jwt(world.browser, earlier["access_token"], typ="at+jwt", iss=ISSUER)
    assert rp.introspect(earlier["access_token"])["active"] is True


def _header(token: str) -> str:
    import base64

    segment = token.split(".")[0]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()
