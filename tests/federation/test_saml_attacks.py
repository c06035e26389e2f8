"""SAML attacks on Entente's ACS, each refused with its own precise reason (and never a 500 or a session).

Every forged document starts from a real response of the pysaml2 IdP peer (captured once per module),
made fresh for each test's own sign-in: new IDs, current times, the ``InResponseTo`` of the
AuthnRequest Entente just sent, and signed again with the IdP's own key (``saml_forge``). The first
test proves such a document is accepted, so each refusal below is caused by its attack alone. The
XSW variants follow Somorovsky et al., "On Breaking SAML" (USENIX Security 2012), as SAML Raider
builds them: Mallory holds a valid assertion for herself and tries to make Entente read Vera's NameID.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.audit.log import Actor, AuditRecord
from broker.federation.models import IdPConnection
from broker.federation.saml_metadata import InvalidMetadata
from broker.federation.service import add_saml_connection
from broker.sessions.models import LoginSession
from tests.conftest import PartnerHandle, new_partner
from tests.federation.browser import Browser
from tests.federation.saml_forge import NS, assertion_of, parse, serialize, sign, strip_signature
from tests.federation.saml_support import (
    IdpAnswer,
    SamlFederated,
    assert_refused,
    idp_answer,
    post_answer,
    register_sp,
)
from tests.peers.saml_idp_process import SamlIdp, make_key_pair

SIGNATURE_REFUSED = "the SAML signature does not verify with the identity provider's certificate from its metadata"
WRAPPING_TWO_ASSERTIONS = "the SAML response carries 2 assertions; exactly one is accepted (signature wrapping)"


def _stamp(delta: dt.timedelta = dt.timedelta()) -> str:
    return (dt.datetime.now(dt.UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Target:
    """One partner with one SAML connection, two people (Mallory, who has an IdP account, and Vera),
    and one real signed response of the IdP for Mallory: the template every forgery starts from."""

    partner: PartnerHandle
    connection_id: str
    idp: SamlIdp
    mallory_id: str
    vera_id: str
    template: bytes


@pytest.fixture(scope="module")
def target(app: FastAPI, engine: Engine, saml_idp: SamlIdp) -> Iterator[Target]:
    partner = new_partner(app, engine)
    with Session(engine) as session:
        connection = add_saml_connection(
            session=session, partner_slug=partner.slug, metadata_xml=saml_idp.metadata(), actor=Actor("cli", "tests")
        )
        connection_id = connection.id
    register_sp(app, saml_idp, connection_id)
    mallory_id, vera_id = f"pid-mallory-{uuid.uuid4().hex}", f"pid-vera-{uuid.uuid4().hex}"
    partner.create_user("mallory", externalId=mallory_id)
    partner.create_user("vera", externalId=vera_id)
    login = f"mallory-{uuid.uuid4().hex[:8]}"
    saml_idp.put_user(login, name_id=mallory_id, mail=[partner.email("mallory")])
    browser = Browser(app)
    try:
        answer = idp_answer(browser, SamlFederated(partner, connection_id, saml_idp), login)
    finally:
        browser.close()
    yield Target(partner, connection_id, saml_idp, mallory_id, vera_id, answer.document)
    partner.client.close()


@dataclass
class Forgery:
    """A sign-in in progress in ``browser`` and a fresh, validly signed response that answers it."""

    target: Target
    browser: Browser
    answer: IdpAnswer
    request_id: str

    def fresh(self, *, signed: bool = True) -> etree._Element:
        """The template, answering this sign-in now, signed (Response and assertion) with the IdP's key;
        ``signed=False`` for a test that changes it and signs it itself."""
        root = parse(self.target.template)
        assertion = assertion_of(root)
        root.set("ID", f"_r{uuid.uuid4().hex}")
        root.set("IssueInstant", _stamp())
        root.set("InResponseTo", self.request_id)
        assertion.set("ID", f"_a{uuid.uuid4().hex}")
        assertion.set("IssueInstant", _stamp())
        data = assertion.find("saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData", NS)
        data.set("InResponseTo", self.request_id)
        data.set("NotOnOrAfter", _stamp(dt.timedelta(minutes=5)))
        conditions = assertion.find("saml:Conditions", NS)
        conditions.set("NotBefore", _stamp())
        conditions.set("NotOnOrAfter", _stamp(dt.timedelta(minutes=5)))
        assertion.find("saml:AuthnStatement", NS).set("AuthnInstant", _stamp())
        return self.sign(root) if signed else root

    def sign(self, root: etree._Element, *, key: tuple[Path, Path] | None = None, **options: bool) -> etree._Element:
        key_file, cert_file = key or (self.target.idp.key_file, self.target.idp.cert_file)
        return sign(root, key_file=key_file, cert_file=cert_file, **options)

    def post(self, document: etree._Element | bytes, *, relay_state: str | None = None) -> httpx.Response:
        body = document if isinstance(document, bytes) else serialize(document)
        return post_answer(self.browser, self.answer, body, relay_state=relay_state)


def _request_id(redirect: str) -> str:
    request = zlib.decompress(base64.b64decode(parse_qs(urlsplit(redirect).query)["SAMLRequest"][0]), -15)
    return ET.fromstring(request).get("ID") or ""


def _start(browser: Browser, target: Target) -> tuple[str, str]:
    """A new sign-in in ``browser``: the AuthnRequest ID and the RelayState Entente sent to the IdP."""
    redirect = browser.to_idp(f"/login/{target.partner.slug}")
    return _request_id(redirect), parse_qs(urlsplit(redirect).query)["RelayState"][0]


@pytest.fixture
def forgery(app: FastAPI, target: Target) -> Iterator[Forgery]:
    browser = Browser(app)
    request_id, relay_state = _start(browser, target)
    answer = IdpAnswer(action=f"http://testserver/login/callback/{target.connection_id}", relay_state=relay_state,
                       document=b"")  # fmt: skip
    yield Forgery(target, browser, answer, request_id)
    browser.close()


def _name_id(element: etree._Element) -> etree._Element:
    found = element.find("saml:Subject/saml:NameID", NS)
    assert found is not None
    return found


def _evil_copy(assertion: etree._Element, target: Target, *, new_id: bool = True) -> etree._Element:
    """Mallory's signed assertion, unsigned, saying Vera's NameID."""
    evil = copy.deepcopy(assertion)
    strip_signature(evil)
    _name_id(evil).text = target.vera_id
    if new_id:
        evil.set("ID", f"_evil{uuid.uuid4().hex}")
    return evil


def _sessions_of(engine: Engine, partner_id: str, subject: str) -> int:
    with Session(engine) as session:
        rows = session.exec(
            select(LoginSession).where(LoginSession.partner_id == partner_id, LoginSession.upstream_subject == subject)
        ).all()
    return len(rows)


# --- the control: a forged-but-honest document is accepted ----------------------------------------


def test_a_fresh_response_signed_with_the_idps_key_is_accepted(forgery: Forgery, engine: Engine) -> None:
    encoded = base64.encodebytes(serialize(forgery.fresh())).decode()  # wrapped at 76 columns, as some IdPs send it
    done = forgery.browser.request(
        "POST", forgery.answer.action, data={"SAMLResponse": encoded, "RelayState": forgery.answer.relay_state}
    )
    assert done.status_code == 303, done.text
    assert _sessions_of(engine, forgery.target.partner.id, forgery.target.mallory_id) >= 1


# --- XML signature wrapping (XSW1-XSW8) ------------------------------------------------------------


def test_xsw1_original_response_moved_into_its_own_signature(forgery: Forgery, engine: Engine) -> None:
    root = forgery.fresh()
    original = copy.deepcopy(root)
    root.set("ID", f"_evil{uuid.uuid4().hex}")
    root.find("ds:Signature", NS).append(original)
    root.replace(assertion_of(root), _evil_copy(assertion_of(root), forgery.target))
    assert_refused(forgery.post(root), WRAPPING_TWO_ASSERTIONS)
    assert _sessions_of(engine, forgery.target.partner.id, forgery.target.vera_id) == 0


def test_xsw2_original_response_as_a_detached_sibling_of_the_signature(forgery: Forgery) -> None:
    root = forgery.fresh()
    original = copy.deepcopy(root)
    root.set("ID", f"_evil{uuid.uuid4().hex}")
    signature = root.find("ds:Signature", NS)
    signature.addprevious(original)
    root.replace(assertion_of(root), _evil_copy(assertion_of(root), forgery.target))
    assert_refused(forgery.post(root), WRAPPING_TWO_ASSERTIONS)


def test_xsw3_evil_assertion_inserted_before_the_signed_one(forgery: Forgery) -> None:
    root = forgery.fresh()
    signed = root.find("saml:Assertion", NS)
    signed.addprevious(_evil_copy(signed, forgery.target))
    assert_refused(forgery.post(root), WRAPPING_TWO_ASSERTIONS)


def test_xsw4_signed_assertion_wrapped_inside_the_evil_one(forgery: Forgery) -> None:
    root = forgery.fresh()
    signed = root.find("saml:Assertion", NS)
    evil = _evil_copy(signed, forgery.target)
    root.replace(signed, evil)
    evil.append(signed)
    assert_refused(forgery.post(root), WRAPPING_TWO_ASSERTIONS)


def test_xsw5_evil_assertion_keeps_the_signature_and_the_original_is_appended(forgery: Forgery) -> None:
    root = forgery.fresh()
    signed = root.find("saml:Assertion", NS)
    original = copy.deepcopy(signed)
    strip_signature(original)
    _name_id(signed).text = forgery.target.vera_id  # same ID, original signature: the one xmlsec1 would look up
    root.append(original)
    assert_refused(
        forgery.post(root),
        f"two elements of the SAML response carry the same ID '{signed.get('ID')}' (signature wrapping)",
    )


def test_xsw6_original_assertion_hidden_inside_the_evil_assertions_signature(forgery: Forgery) -> None:
    root = forgery.fresh()
    signed = root.find("saml:Assertion", NS)
    original = copy.deepcopy(signed)
    strip_signature(original)
    signed.set("ID", f"_evil{uuid.uuid4().hex}")
    _name_id(signed).text = forgery.target.vera_id
    signed.find("ds:Signature", NS).append(original)
    assert_refused(forgery.post(root), WRAPPING_TWO_ASSERTIONS)


def test_xsw7_evil_assertion_in_response_extensions(forgery: Forgery) -> None:
    root = forgery.fresh()
    signed = root.find("saml:Assertion", NS)
    extensions = etree.Element(f"{{{NS['samlp']}}}Extensions")
    extensions.append(_evil_copy(signed, forgery.target))
    root.find("saml:Issuer", NS).addnext(extensions)
    assert_refused(forgery.post(root), WRAPPING_TWO_ASSERTIONS)


def test_xsw8_original_assertion_in_a_ds_object_of_the_evil_signature(forgery: Forgery) -> None:
    root = forgery.fresh()
    signed = root.find("saml:Assertion", NS)
    original = copy.deepcopy(signed)
    strip_signature(original)
    _name_id(signed).text = forgery.target.vera_id
    signed.set("ID", f"_evil{uuid.uuid4().hex}")
    holder = etree.SubElement(signed.find("ds:Signature", NS), f"{{{NS['ds']}}}Object")
    holder.append(original)
    assert_refused(
        forgery.post(root), "the SAML response carries a ds:Object, which SAML signatures never use (wrapping)"
    )


# --- signatures --------------------------------------------------------------------------------------


def test_comment_injection_in_name_id_is_refused_not_truncated(forgery: Forgery, engine: Engine) -> None:
    root = forgery.fresh(signed=False)
    _name_id(assertion_of(root)).text = f"{forgery.target.vera_id}.mallory"  # what the IdP signs for Mallory
    root = forgery.sign(root)
    name_id = _name_id(assertion_of(root))
    name_id.text = forgery.target.vera_id
    comment = etree.Comment("")
    name_id.append(comment)
    comment.tail = ".mallory"  # exclusive c14n drops the comment: both signatures still verify
    assert_refused(forgery.post(root), "the SAML response contains an XML comment; refused, as comments can truncate")
    assert _sessions_of(engine, forgery.target.partner.id, forgery.target.vera_id) == 0


def test_signature_exclusion_no_signature_at_all(forgery: Forgery) -> None:
    root = forgery.fresh()
    strip_signature(root)
    strip_signature(assertion_of(root))
    assert_refused(forgery.post(root), "the SAML response carries no signature at all")


def test_unsigned_assertion_inside_a_signed_response(forgery: Forgery) -> None:
    root = forgery.sign(forgery.fresh(signed=False), assertion=False, response=True)  # the Response signature is valid
    assert root.find("ds:Signature", NS) is not None and assertion_of(root).find("ds:Signature", NS) is None
    assert_refused(forgery.post(root), "the assertion inside the signed response is not signed")


def test_signature_whose_reference_points_elsewhere(forgery: Forgery) -> None:
    root = forgery.fresh()
    reference = assertion_of(root).find("ds:Signature/ds:SignedInfo/ds:Reference", NS)
    reference.set("URI", f"#{root.get('ID')}")
    assert_refused(
        forgery.post(root),
        f"the signature of the assertion references '#{root.get('ID')}', not the assertion itself "
        f"('#{assertion_of(root).get('ID')}'): signature wrapping",
    )


def test_assertion_signed_by_another_key_with_its_certificate_embedded(forgery: Forgery, tmp_path: Path) -> None:
    attacker = make_key_pair(tmp_path, "attacker")
    root = forgery.sign(forgery.fresh(signed=False), key=attacker)  # KeyInfo carries the attacker's certificate
    assert root.find("ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS) is not None
    assert_refused(forgery.post(root), SIGNATURE_REFUSED)


def test_attribute_tampered_after_signing(forgery: Forgery) -> None:
    root = forgery.fresh()
    values = assertion_of(root).findall("saml:AttributeStatement/saml:Attribute/saml:AttributeValue", NS)
    assert values
    values[0].text = forgery.target.partner.email("vera")
    assert_refused(forgery.post(root), SIGNATURE_REFUSED)


def test_sha1_signatures_are_refused(forgery: Forgery) -> None:
    root = forgery.sign(forgery.fresh(signed=False), sha1=True)
    assert_refused(
        forgery.post(root),
        "the assertion is signed with 'http://www.w3.org/2000/09/xmldsig#rsa-sha1'; Entente accepts RSA or ECDSA "
        "with SHA-256 or stronger",
    )


def test_assertion_from_another_issuer(forgery: Forgery, tmp_path: Path) -> None:
    root = forgery.fresh(signed=False)
    for issuer in (root.find("saml:Issuer", NS), assertion_of(root).find("saml:Issuer", NS)):
        issuer.text = "https://evil-idp.example/metadata"
    root = forgery.sign(root, key=make_key_pair(tmp_path, "evil-idp"))
    assert_refused(
        forgery.post(root),
        "the assertion was issued by 'https://evil-idp.example/metadata', not by this connection's identity "
        f"provider '{forgery.target.idp.entity_id}'",
    )


# --- metadata: no usable certificate, no trust ------------------------------------------------------


def _metadata_without(idp: SamlIdp, *, empty: bool) -> str:
    metadata = idp.metadata()
    if empty:
        return re.sub(r"(<ns\d:X509Certificate>)[^<]+(</ns\d:X509Certificate>)", r"\1\2", metadata)
    return re.sub(r"<ns\d:KeyDescriptor.*?</ns\d:KeyDescriptor>", "", metadata, flags=re.S)


def test_metadata_with_an_empty_certificate_is_refused_at_setup(target: Target, engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(InvalidMetadata) as refused:
        add_saml_connection(
            session=session,
            partner_slug=target.partner.slug,
            metadata_xml=_metadata_without(target.idp, empty=True),
            actor=Actor("cli", "tests"),
            name="empty-cert",
        )
    assert refused.value.detail == (
        "the IdP metadata has an empty signing certificate; Entente refuses it (fail closed)"
    )


def test_metadata_without_a_certificate_fails_closed_at_setup_and_at_login(
    target: Target, engine: Engine, app: FastAPI
) -> None:
    refusal = (
        "the IdP metadata publishes no signing certificate; Entente could not check its signatures and refuses it "
        "(fail closed)"
    )
    stripped = _metadata_without(target.idp, empty=False)
    with Session(engine) as session, pytest.raises(InvalidMetadata) as refused:
        add_saml_connection(
            session=session,
            partner_slug=target.partner.slug,
            metadata_xml=stripped,
            actor=Actor("cli", "tests"),
            name="no-cert",
        )
    assert refused.value.detail == refusal
    partner = new_partner(app, engine)  # a connection whose stored metadata lost its certificate later
    with Session(engine) as session:
        connection = add_saml_connection(
            session=session, partner_slug=partner.slug, metadata_xml=target.idp.metadata(), actor=Actor("cli", "t")
        )
        row = session.get(IdPConnection, connection.id)
        assert row is not None
        row.saml_metadata, row.version = stripped, row.version + 1
        session.add(row)
        session.commit()
    browser = Browser(app)
    try:
        assert_refused(browser.get(f"/login/{partner.slug}"), refusal)
    finally:
        browser.close()
        partner.client.close()


# --- conditions, addressing and time --------------------------------------------------------------


def _subject_data(root: etree._Element) -> etree._Element:
    return assertion_of(root).find("saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData", NS)


def test_expired_assertion_not_on_or_after(forgery: Forgery, engine: Engine) -> None:
    root = forgery.fresh(signed=False)
    ended = _stamp(-dt.timedelta(minutes=3))
    assertion_of(root).set("IssueInstant", _stamp(-dt.timedelta(minutes=5)))
    _subject_data(root).set("NotOnOrAfter", ended)
    conditions = assertion_of(root).find("saml:Conditions", NS)
    conditions.set("NotBefore", _stamp(-dt.timedelta(minutes=6)))
    conditions.set("NotOnOrAfter", ended)
    done = forgery.post(forgery.sign(root))
    assert_refused(done, f"the assertion expired at {ended} (SubjectConfirmationData NotOnOrAfter")
    with Session(engine) as session:
        failed = session.exec(
            select(AuditRecord).where(
                AuditRecord.partner_id == forgery.target.partner.id, AuditRecord.action == "login.failed"
            )
        ).all()
    assert any(r.detail["error"] == "InvalidAssertion" and "expired" in r.detail["reason"] for r in failed)


def test_assertion_not_yet_valid_not_before_in_the_future(forgery: Forgery) -> None:
    root = forgery.fresh(signed=False)
    starts = _stamp(dt.timedelta(minutes=10))
    assertion_of(root).find("saml:Conditions", NS).set("NotBefore", starts)
    assertion_of(root).find("saml:Conditions", NS).set("NotOnOrAfter", _stamp(dt.timedelta(minutes=15)))
    assert_refused(
        forgery.post(forgery.sign(root)),
        f"the assertion is not valid before {starts} (Conditions NotBefore is in the future",
    )


def test_wrong_audience(forgery: Forgery) -> None:
    root = forgery.fresh(signed=False)
    assertion_of(root).find(
        "saml:Conditions/saml:AudienceRestriction/saml:Audience", NS
    ).text = "https://other-sp.example/metadata"
    assert_refused(
        forgery.post(forgery.sign(root)),
        "the assertion is meant for 'https://other-sp.example/metadata' (Audience), not for this connection's "
        f"entity ID 'http://testserver/login/saml/{forgery.target.connection_id}/metadata'",
    )


def test_wrong_recipient(forgery: Forgery) -> None:
    root = forgery.fresh(signed=False)
    _subject_data(root).set("Recipient", "http://testserver/login/callback/other.saml")
    assert_refused(
        forgery.post(forgery.sign(root)),
        "the assertion's Recipient 'http://testserver/login/callback/other.saml' is not this connection's ACS URL",
    )


def test_wrong_destination(forgery: Forgery) -> None:
    root = forgery.fresh(signed=False)
    root.set("Destination", "https://other-sp.example/acs")
    assert_refused(
        forgery.post(forgery.sign(root)),
        "the SAML response is addressed to 'https://other-sp.example/acs' (Destination), not to this connection's "
        f"ACS URL 'http://testserver/login/callback/{forgery.target.connection_id}'",
    )


# --- replay, InResponseTo, unsolicited --------------------------------------------------------------


def test_replay_of_a_valid_response_is_refused_by_the_ledger(forgery: Forgery) -> None:
    """Even by a thief who copied the browser's transaction cookie as well as the response."""
    document = forgery.fresh()
    jar = forgery.browser.entente.cookies.jar
    stolen = [cookie for cookie in jar if cookie.name.startswith("entente_login_")]
    assert len(stolen) == 1
    assert forgery.post(document).status_code == 303
    jar.set_cookie(stolen[0])
    assert_refused(
        forgery.post(document), "this SAML assertion was already used to sign in; each one is accepted once (replay)"
    )


def test_replay_in_another_browser_is_refused(forgery: Forgery, app: FastAPI) -> None:
    document = forgery.fresh()
    assert forgery.post(document).status_code == 303
    other = Browser(app)
    try:
        replayed = post_answer(other, forgery.answer, serialize(document))
    finally:
        other.close()
    assert_refused(replayed, "this sign-in response belongs to no sign-in in progress in this browser")


def test_in_response_to_of_another_sign_in(forgery: Forgery) -> None:
    document = forgery.fresh()  # answers the first sign-in
    _, second_relay_state = _start(forgery.browser, forgery.target)
    assert_refused(
        forgery.post(document, relay_state=second_relay_state),
        f"the SAML response answers another sign-in request (InResponseTo '{forgery.request_id}')",
    )


def test_unsolicited_response_without_in_response_to(forgery: Forgery) -> None:
    root = forgery.fresh(signed=False)
    del root.attrib["InResponseTo"]
    del _subject_data(root).attrib["InResponseTo"]
    assert_refused(
        forgery.post(forgery.sign(root)),
        "the SAML response is unsolicited (no InResponseTo); Entente accepts only answers to a sign-in it started",
    )


# --- XML parsing ------------------------------------------------------------------------------------


def test_xxe_external_entity_is_refused_before_parsing(forgery: Forgery) -> None:
    document = serialize(forgery.fresh()).decode()
    body = document.split("?>", 1)[1]
    body = body.replace(forgery.target.mallory_id, "&xxe;", 1)
    evil = f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>{body}'
    assert_refused(
        forgery.post(evil.encode()),
        "the SAML response contains a DTD or entity declaration (DTDForbidden); Entente refuses DTDs and "
        "entities in SAML (XXE)",
    )


def test_a_dtd_alone_is_refused(forgery: Forgery) -> None:
    body = serialize(forgery.fresh()).decode().split("?>", 1)[1]
    assert_refused(
        forgery.post(f"<!DOCTYPE samlp:Response>{body}".encode()),
        "the SAML response contains a DTD or entity declaration (DTDForbidden)",
    )


def test_an_idp_error_status_is_shown_not_a_500(forgery: Forgery) -> None:
    root = forgery.fresh()
    strip_signature(root)
    root.remove(assertion_of(root))
    code = root.find("samlp:Status/samlp:StatusCode", NS)
    code.set("Value", "urn:oasis:names:tc:SAML:2.0:status:Responder")
    etree.SubElement(code, f"{{{NS['samlp']}}}StatusCode", Value="urn:oasis:names:tc:SAML:2.0:status:AuthnFailed")
    etree.SubElement(root.find("samlp:Status", NS), f"{{{NS['samlp']}}}StatusMessage").text = "wrong password"
    assert_refused(forgery.post(root), "your identity provider did not sign you in: AuthnFailed (wrong password)")


def test_garbage_is_refused_with_a_page(forgery: Forgery) -> None:
    response = forgery.browser.request(
        "POST", forgery.answer.action, data={"SAMLResponse": "%%%not base64", "RelayState": forgery.answer.relay_state}
    )
    assert_refused(response, "the SAMLResponse is not base64")
    _, relay_state = _start(forgery.browser, forgery.target)  # a refusal ends the sign-in: start another
    malformed = post_answer(forgery.browser, forgery.answer, b"<samlp:Response", relay_state=relay_state)
    assert_refused(malformed, "the SAML response is not well-formed XML")
