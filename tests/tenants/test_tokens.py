"""SCIM bearer credentials (RFC 6750 over RFC 7644 §2): each refusal is a 401 with ``WWW-Authenticate:
Bearer`` and an RFC 7644 §3.12 Error saying why; the secret is stored only as a digest; a token
resolves to its own partner and nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from broker.audit.log import Actor
from broker.errors import BadRequest
from broker.tenants.models import Partner, PartnerStatus, ScimToken
from broker.tenants.service import issue_scim_token, list_tokens, revoke_scim_token
from broker.types import utcnow
from tests.conftest import SCIM_BASE, USER_SCHEMA, MakePartner, PartnerHandle, assert_scim_error

TOKEN_RE = re.compile(r"^ent_scim_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
ACTOR = Actor("cli", "tests")
# Every kind of SCIM request must be refused the same way, before its body is even read.
PROBES: list[tuple[str, str, Any]] = [
    ("GET", "/Users", None),
    ("GET", "/Groups/00000000-0000-0000-0000-000000000000", None),
    ("GET", "/ServiceProviderConfig", None),
    ("GET", "/Schemas", None),
    ("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "x@y.test"}),
    ("POST", "/Users", "not json at all"),
    ("PATCH", "/Users/00000000-0000-0000-0000-000000000000", {}),
    ("DELETE", "/Groups/00000000-0000-0000-0000-000000000000", None),
    ("POST", "/.search", {}),
    ("POST", "/Bulk", {}),
]


@pytest.fixture
def anonymous(app: FastAPI) -> Iterator[TestClient]:
    """A SCIM client that sends no Authorization header of its own."""
    with TestClient(app, base_url=SCIM_BASE, raise_server_exceptions=False) as client:
        yield client


def _issue(
    engine: Engine, slug: str, expires_in: dt.timedelta = dt.timedelta(hours=1), label: str | None = None
) -> str:
    with Session(engine, expire_on_commit=False) as session:
        return issue_scim_token(session=session, slug=slug, expires_in=expires_in, actor=ACTOR, label=label).secret_text


def _token_id(text: str) -> str:
    match = TOKEN_RE.match(text)
    assert match is not None, text
    return match.group(1)


def _refused(client: TestClient, authorization: str | None, detail: str, *, token_sent: bool = True) -> None:
    """Every probe answers 401, ``WWW-Authenticate: Bearer ...`` and an Error whose detail says why."""
    headers = {} if authorization is None else {"Authorization": authorization.encode()}  # bytes: any text
    for method, path, body in PROBES:
        kwargs: dict[str, Any] = {"headers": headers}
        if isinstance(body, str):
            kwargs["content"] = body
        elif body is not None:
            kwargs["json"] = body
        response = client.request(method, path, **kwargs)
        error = assert_scim_error(response, 401)
        assert "scimType" not in error
        assert error["detail"] == detail, (method, path, error)
        challenge = response.headers.get("www-authenticate", "")
        assert challenge.split(" ", 1)[0] == "Bearer", challenge
        assert 'realm="entente-scim"' in challenge
        # RFC 6750 §3.1: no error code when the request carried no token at all
        assert ('error="invalid_token"' in challenge) is token_sent, challenge


def test_missing_header(anonymous: TestClient) -> None:
    _refused(
        anonymous,
        None,
        "missing Authorization header: send 'Authorization: Bearer <token>'",
        token_sent=False,
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer",
        "Bearer    ",
        "Bearerabc",
        "Negotiate YII=",
        "ent_scim_0123456789abcdef_x",
    ],
)
def test_wrong_scheme(anonymous: TestClient, header: str) -> None:
    detail = (
        "missing Authorization header: send 'Authorization: Bearer <token>'"
        if header == ""
        else "Authorization must use the Bearer scheme"
    )
    _refused(anonymous, header, detail, token_sent=False)


@pytest.mark.parametrize(
    "credential",
    [
        "abc",
        "ent_scim_",
        "ent_scim_0123456789ABCDEF_" + "a" * 43,
        "ent_scim_0123456789abcdef_" + "a" * 42,
        "ent_scim_0123456789abcdef_" + "a" * 44,
        "ent_scim_0123456789abcde_" + "a" * 43,
        "ent_scim_0123456789abcdef_" + "a" * 42 + "=",
        "xnt_scim_0123456789abcdef_" + "a" * 43,
        "ent_scim_0123456789abcdef_" + "a" * 20 + " " + "a" * 22,
        "ent_scim_0123456789abcdef_" + "a" * 42 + "é",
    ],
)
def test_malformed_token(anonymous: TestClient, credential: str) -> None:
    _refused(
        anonymous,
        f"Bearer {credential}",
        "malformed bearer token: expected 'ent_scim_<16 hex>_<43 base64url>'",
    )


def test_unknown_id_and_wrong_secret_answer_alike(anonymous: TestClient, partner: PartnerHandle) -> None:
    """A well-formed token whose id does not exist and a real id with a wrong secret get the same answer,
    so the token id is no oracle; neither says more than 'invalid'."""
    unknown = f"ent_scim_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    token_id = _token_id(partner.token)
    wrong_secret = f"ent_scim_{token_id}_{secrets.token_urlsafe(32)}"
    for credential in (unknown, wrong_secret):
        _refused(anonymous, f"Bearer {credential}", "invalid bearer token")


def test_secret_of_one_token_does_not_open_another(
    make_partner: MakePartner, engine: Engine, anonymous: TestClient
) -> None:
    """The id selects the row and the secret must be that row's: swapping halves of two valid tokens fails."""
    first = make_partner()
    second_token = _issue(engine, first.slug)
    other_partner = make_partner()
    for id_from, secret_from in (
        (first.token, second_token),
        (second_token, first.token),
        (first.token, other_partner.token),
    ):
        swapped = f"ent_scim_{_token_id(id_from)}_{TOKEN_RE.match(secret_from).group(2)}"  # type: ignore[union-attr]
        _refused(anonymous, f"Bearer {swapped}", "invalid bearer token")


def test_revoked(make_partner: MakePartner, engine: Engine, anonymous: TestClient) -> None:
    """A revoked token is refused at once; the reason is only told to the holder of the secret."""
    partner = make_partner()
    spare = _issue(engine, partner.slug)
    assert anonymous.get("/Users", headers={"Authorization": f"Bearer {partner.token}"}).status_code == 200
    with Session(engine) as session:
        revoke_scim_token(session=session, slug=partner.slug, token_id=_token_id(partner.token), actor=ACTOR)
    _refused(anonymous, f"Bearer {partner.token}", "bearer token has been revoked")
    guess = f"ent_scim_{_token_id(partner.token)}_{secrets.token_urlsafe(32)}"
    _refused(anonymous, f"Bearer {guess}", "invalid bearer token")
    # the partner's other token keeps working
    assert anonymous.get("/Users", headers={"Authorization": f"Bearer {spare}"}).status_code == 200


def test_expired(make_partner: MakePartner, engine: Engine, anonymous: TestClient) -> None:
    """A token past its expiry (set in the row, as time would) is refused as expired."""
    partner = make_partner()
    with Session(engine) as session:
        row = session.get(ScimToken, _token_id(partner.token))
        assert row is not None
        row.expires_at = utcnow() - dt.timedelta(seconds=1)
        session.add(row)
        session.commit()
    _refused(anonymous, f"Bearer {partner.token}", "bearer token has expired")
    guess = f"ent_scim_{_token_id(partner.token)}_{secrets.token_urlsafe(32)}"
    _refused(anonymous, f"Bearer {guess}", "invalid bearer token")


def test_expiry_boundary(make_partner: MakePartner, engine: Engine, anonymous: TestClient) -> None:
    """Valid until expires_at, refused from it on (``expires_at <= now`` is expired)."""
    partner = make_partner()
    with Session(engine) as session:
        row = session.get(ScimToken, _token_id(partner.token))
        assert row is not None
        row.expires_at = utcnow() + dt.timedelta(minutes=5)
        session.add(row)
        session.commit()
    assert anonymous.get("/Users", headers={"Authorization": f"Bearer {partner.token}"}).status_code == 200
    with Session(engine) as session:
        row = session.get(ScimToken, _token_id(partner.token))
        assert row is not None
        row.expires_at = utcnow()
        session.add(row)
        session.commit()
    _refused(anonymous, f"Bearer {partner.token}", "bearer token has expired")


def test_suspended_partner(make_partner: MakePartner, engine: Engine, anonymous: TestClient) -> None:
    """Every token of a suspended partner is refused; reactivating restores them."""
    partner = make_partner()
    other = make_partner()

    def set_status(status: PartnerStatus) -> None:
        with Session(engine) as session:
            row = session.get(Partner, partner.id)
            assert row is not None
            row.status = status.value
            session.add(row)
            session.commit()

    set_status(PartnerStatus.SUSPENDED)
    _refused(anonymous, f"Bearer {partner.token}", "partner is suspended")
    assert other.client.get("/Users").status_code == 200, "another partner is unaffected"
    set_status(PartnerStatus.ACTIVE)
    assert partner.client.get("/Users").status_code == 200


def test_scheme_is_case_insensitive(partner: PartnerHandle, anonymous: TestClient) -> None:
    """RFC 7235 §2.1: the auth-scheme is case-insensitive."""
    for scheme in ("bearer", "BEARER", "BeArEr"):
        response = anonymous.get("/Users", headers={"Authorization": f"{scheme} {partner.token}"})
        assert response.status_code == 200, response.text


def test_the_secret_is_never_stored(make_partner: MakePartner, engine: Engine) -> None:
    """No column of any table holds the secret or the token text; scim_token keeps its SHA-256 only."""
    partner = make_partner()
    labelled = _issue(engine, partner.slug, label="Okta prod")
    tokens = {partner.token: TOKEN_RE.match(partner.token), labelled: TOKEN_RE.match(labelled)}
    with Session(engine) as session:
        for text, match in tokens.items():
            assert match is not None
            row = session.get(ScimToken, match.group(1))
            assert row is not None and row.partner_id == partner.id
            assert row.secret_sha256 == hashlib.sha256(match.group(2).encode()).hexdigest()
        dump = []
        for table in SQLModel.metadata.sorted_tables:
            for values in session.execute(sql_select(table)).all():
                dump.append(repr(tuple(values)))
        everything = "\n".join(dump)
    for text, match in tokens.items():
        assert match is not None
        assert match.group(2) not in everything
        assert text not in everything
        assert match.group(1) in everything  # the id is public and stored: the scan did see the rows


def test_listing_tokens_shows_no_secret(make_partner: MakePartner, engine: Engine) -> None:
    partner = make_partner()
    with Session(engine) as session:
        rows = list_tokens(session=session, slug=partner.slug)
    assert [r.id for r in rows] == [_token_id(partner.token)]
    secret = TOKEN_RE.match(partner.token).group(2)  # type: ignore[union-attr]
    assert all(secret not in repr(r.model_dump()) for r in rows)


def test_token_must_expire_in_the_future(partner: PartnerHandle, engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(BadRequest, match="expire in the future"):
        issue_scim_token(session=session, slug=partner.slug, expires_in=dt.timedelta(0), actor=ACTOR)


def test_a_token_maps_to_its_partner_only(make_partner: MakePartner, engine: Engine) -> None:
    """Each token sees its own partner's users and nothing else; the URL cannot choose the tenant."""
    a, b = make_partner(), make_partner()
    a_user, b_user = a.create_user("alice")["id"], b.create_user("bob")["id"]
    a_second = _issue(engine, a.slug)
    for token, own, foreign in (
        (a.token, a_user, b_user),
        (a_second, a_user, b_user),
        (b.token, b_user, a_user),
    ):
        headers = {"Authorization": f"Bearer {token}"}
        listed = a.client.get("/Users", headers=headers).json()
        assert [r["id"] for r in listed["Resources"]] == [own]
        assert a.client.get(f"/Users/{own}", headers=headers).status_code == 200
        assert_scim_error(a.client.get(f"/Users/{foreign}", headers=headers), 404)


def test_use_is_recorded_coarsely(partner: PartnerHandle, engine: Engine) -> None:
    """last_used_at is set on first use (so operators can find idle tokens) and not rewritten every call."""
    with Session(engine) as session:
        row = session.get(ScimToken, _token_id(partner.token))
        assert row is not None and row.last_used_at is None
    assert partner.client.get("/Users").status_code == 200
    with Session(engine) as session:
        row = session.get(ScimToken, _token_id(partner.token))
        assert row is not None and row.last_used_at is not None
        first = row.last_used_at
    assert partner.client.get("/Users").status_code == 200
    with Session(engine) as session:
        row = session.get(ScimToken, _token_id(partner.token))
        assert row is not None and row.last_used_at == first
