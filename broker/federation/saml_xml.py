"""The shape a SAML 2.0 Response must have before any of it is believed: XXE, comments, signature wrapping.

saml-core §5.4 (XML Signature profile: enveloped signatures, one ``Reference`` to the enclosing
element's ``ID``) and the defences against the eight XML Signature Wrapping attacks of Somorovsky et
al., "On Breaking SAML: Be Whoever You Want to Be" (USENIX Security 2012). Rather than trying to
find "the" signed assertion among several, Entente accepts exactly one shape and refuses the rest:

- no DTD, entity declaration or external reference (defusedxml refuses them while parsing, so no
  entity is ever expanded and nothing is fetched: XXE and billion laughs);
- no XML comment or processing instruction (comment injection truncates a NameID in parsers that
  read only the first text node, while exclusive c14n drops the comment and the signature holds);
- ``samlp:Response`` at the root, no two elements with the same ``ID``, no ``ds:Object``;
- exactly one ``saml:Assertion`` in the whole document, a direct child of the Response (none in
  ``Extensions``, ``Advice``, a signature or another assertion), and no ``EncryptedAssertion``;
- signatures only as direct children of the Response or of the assertion, each with exactly one
  ``Reference`` to its own parent's ``ID`` and no SHA-1/MD5 algorithm; the assertion must be signed
  (a signed Response around an unsigned assertion is refused).

What passes is then verified cryptographically by pysaml2/xmlsec1 (``broker.federation.saml``), and
because the document holds exactly one assertion with a unique ``ID``, the element xmlsec1 verifies
is necessarily the one whose conditions are checked and whose subject is used.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - only for the element types; parsing is defusedxml's
from collections import Counter
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from broker.federation.base import InvalidAssertion, UpstreamError

__all__ = ["ASSERTION", "DS", "PROTOCOL", "ResponseShape", "parse_response", "parse_xml"]

PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"

ALLOWED_SIGNATURE_METHODS = frozenset(
    {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    }
)
ALLOWED_DIGEST_METHODS = frozenset(
    {
        "http://www.w3.org/2001/04/xmlenc#sha256",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    }
)


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def parse_xml(data: bytes, *, what: str) -> ET.Element:
    """Parse untrusted XML keeping comments and processing instructions (so they can be refused);
    a DTD, an entity or an external reference is refused before anything is expanded or fetched."""
    parser = DefusedXMLParser(
        target=ET.TreeBuilder(insert_comments=True, insert_pis=True),
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )
    try:
        parser.feed(data)
        root: ET.Element = parser.close()
        return root
    except DefusedXmlException as exc:
        raise InvalidAssertion(
            f"the {what} contains a DTD or entity declaration ({type(exc).__name__}); Entente refuses DTDs and "
            "entities in SAML (XXE)"
        ) from exc
    except ET.ParseError as exc:
        raise InvalidAssertion(f"the {what} is not well-formed XML ({exc})") from exc


@dataclass(frozen=True)
class ResponseShape:
    """A Response that has the one accepted shape; nothing in it is verified yet."""

    response: ET.Element
    assertion: ET.Element
    response_signed: bool


def _check_markup(root: ET.Element) -> None:
    for node in root.iter():
        if node.tag is ET.Comment or node.tag is ET.ProcessingInstruction:  # type: ignore[comparison-overlap]
            kind = "comment" if node.tag is ET.Comment else "processing instruction"  # type: ignore[comparison-overlap]
            raise InvalidAssertion(
                f"the SAML response contains an XML {kind}; refused, as comments can truncate a NameID "
                "without breaking the signature (comment injection)"
            )


def _check_ids(root: ET.Element) -> None:
    counts = Counter(node.get("ID") for node in root.iter() if node.get("ID") is not None)
    duplicated = sorted(str(value) for value, count in counts.items() if count > 1)
    if duplicated:
        raise InvalidAssertion(
            f"two elements of the SAML response carry the same ID '{duplicated[0][:80]}' (signature wrapping)"
        )


def _check_status(response: ET.Element) -> None:
    code = response.find(f"{_q(PROTOCOL, 'Status')}/{_q(PROTOCOL, 'StatusCode')}")
    value = code.get("Value") if code is not None else None
    if value == STATUS_SUCCESS:
        return
    if value is None:
        raise InvalidAssertion("the SAML response has no Status")
    sub = code.find(_q(PROTOCOL, "StatusCode")) if code is not None else None
    detail = (sub.get("Value") or "") if sub is not None else ""
    message = response.findtext(f"{_q(PROTOCOL, 'Status')}/{_q(PROTOCOL, 'StatusMessage')}") or ""
    shown = (detail or value).rpartition(":")[2][:64]
    raise UpstreamError(
        f"your identity provider did not sign you in: {shown}" + (f" ({message[:200]})" if message else "")
    )


def _check_signature(signature: ET.Element, parent: ET.Element, label: str) -> None:
    references = signature.findall(f"{_q(DS, 'SignedInfo')}/{_q(DS, 'Reference')}")
    own_id = parent.get("ID") or ""
    if len(references) != 1:
        raise InvalidAssertion(
            f"the signature of the {label} has {len(references)} references; exactly one, to the {label} itself, "
            "is allowed (saml-core §5.4.2)"
        )
    uri = references[0].get("URI") or ""
    if uri != f"#{own_id}" or not own_id:
        raise InvalidAssertion(
            f"the signature of the {label} references '{uri[:80]}', not the {label} itself ('#{own_id[:80]}'): "
            "signature wrapping"
        )
    method = signature.find(f"{_q(DS, 'SignedInfo')}/{_q(DS, 'SignatureMethod')}")
    algorithm = method.get("Algorithm", "") if method is not None else ""
    if algorithm not in ALLOWED_SIGNATURE_METHODS:
        raise InvalidAssertion(
            f"the {label} is signed with '{algorithm[:100]}'; Entente accepts RSA or ECDSA with SHA-256 or stronger"
        )
    digest = references[0].find(_q(DS, "DigestMethod"))
    digest_algorithm = digest.get("Algorithm", "") if digest is not None else ""
    if digest_algorithm not in ALLOWED_DIGEST_METHODS:
        raise InvalidAssertion(
            f"the {label}'s signature uses the digest '{digest_algorithm[:100]}'; Entente accepts SHA-256 or stronger"
        )


def _check_signatures(response: ET.Element, assertion: ET.Element) -> bool:
    """Every signature is enveloped in the Response or the assertion; returns whether the Response is signed."""
    allowed_parents = {id(response): "response", id(assertion): "assertion"}
    placed: dict[str, list[ET.Element]] = {"response": [], "assertion": []}
    for parent in response.iter():
        for child in parent:
            if child.tag != _q(DS, "Signature"):
                continue
            label = allowed_parents.get(id(parent))
            if label is None:
                raise InvalidAssertion(
                    f"the SAML response carries a signature inside <{str(parent.tag).rpartition('}')[2]}>; "
                    "signatures are accepted only on the Response and the assertion (signature wrapping)"
                )
            placed[label].append(child)
    for label, signatures in placed.items():
        if len(signatures) > 1:
            raise InvalidAssertion(f"the {label} carries {len(signatures)} signatures; one is accepted")
    if not placed["assertion"]:
        if placed["response"]:
            raise InvalidAssertion(
                "the assertion inside the signed response is not signed; Entente requires the identity provider "
                "to sign the assertion itself"
            )
        raise InvalidAssertion("the SAML response carries no signature at all; Entente requires a signed assertion")
    _check_signature(placed["assertion"][0], assertion, "assertion")
    if placed["response"]:
        _check_signature(placed["response"][0], response, "response")
    return bool(placed["response"])


def parse_response(data: bytes) -> ResponseShape:
    """The Response in ``data`` if it has the accepted shape (module docstring), else a FederationError.

    ``UpstreamError`` when the IdP answered with a non-success status, ``InvalidAssertion`` otherwise.
    """
    root = parse_xml(data, what="SAML response")
    if root.tag != _q(PROTOCOL, "Response"):
        raise InvalidAssertion(f"the SAML message is a <{str(root.tag).rpartition('}')[2]}>, not a <samlp:Response>")
    _check_markup(root)
    _check_ids(root)
    if root.find(f".//{_q(DS, 'Object')}") is not None:
        raise InvalidAssertion("the SAML response carries a ds:Object, which SAML signatures never use (wrapping)")
    _check_status(root)
    if root.find(f".//{_q(ASSERTION, 'EncryptedAssertion')}") is not None:
        raise InvalidAssertion(
            "the SAML response carries an encrypted assertion; Entente takes signed, unencrypted assertions "
            "(over TLS): turn assertion encryption off for this application at the identity provider"
        )
    assertions = list(root.iter(_q(ASSERTION, "Assertion")))
    if len(assertions) != 1:
        raise InvalidAssertion(
            f"the SAML response carries {len(assertions)} assertions; exactly one is accepted (signature wrapping)"
        )
    assertion = assertions[0]
    if assertion not in list(root):
        raise InvalidAssertion(
            "the assertion is nested inside another element, not a direct child of the Response (signature wrapping)"
        )
    return ResponseShape(response=root, assertion=assertion, response_signed=_check_signatures(root, assertion))
