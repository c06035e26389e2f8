"""Forging SAML responses for the attack tests: lxml to mutate, xmlsec1 to sign (as an IdP would).

lxml keeps namespace prefixes and everything it does not touch byte-for-byte, so a mutation changes
exactly what the test means to change and the untouched signatures stay valid. ``sign`` signs the
way pysaml2's IdP does (enveloped, exclusive c14n, one Reference to the element's ID), with any key,
so a test can produce a correctly signed assertion that says something false (expired, another
audience), or one signed by a key the IdP's metadata does not hold.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from lxml import etree

__all__ = [
    "NS",
    "assertion_of",
    "parse",
    "serialize",
    "sign",
    "strip_signature",
]

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)


def parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml, _PARSER)


def serialize(root: etree._Element) -> bytes:
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return data


def assertion_of(root: etree._Element) -> etree._Element:
    found = root.findall("saml:Assertion", NS)
    assert len(found) == 1, found
    return found[0]


def strip_signature(element: etree._Element) -> etree._Element | None:
    """Remove ``element``'s own (enveloped) signature; returns it."""
    signature = element.find("ds:Signature", NS)
    if signature is not None:
        element.remove(signature)
    return signature


def _template(reference_id: str, signature_method: str, digest_method: str) -> etree._Element:
    ds = NS["ds"]
    signature = etree.Element(f"{{{ds}}}Signature", nsmap={"ds": ds})
    info = etree.SubElement(signature, f"{{{ds}}}SignedInfo")
    etree.SubElement(info, f"{{{ds}}}CanonicalizationMethod", Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
    etree.SubElement(info, f"{{{ds}}}SignatureMethod", Algorithm=signature_method)
    reference = etree.SubElement(info, f"{{{ds}}}Reference", URI=f"#{reference_id}")
    transforms = etree.SubElement(reference, f"{{{ds}}}Transforms")
    etree.SubElement(
        transforms, f"{{{ds}}}Transform", Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"
    )
    etree.SubElement(transforms, f"{{{ds}}}Transform", Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
    etree.SubElement(reference, f"{{{ds}}}DigestMethod", Algorithm=digest_method)
    etree.SubElement(reference, f"{{{ds}}}DigestValue")
    etree.SubElement(signature, f"{{{ds}}}SignatureValue")
    key_info = etree.SubElement(signature, f"{{{ds}}}KeyInfo")
    etree.SubElement(key_info, f"{{{ds}}}X509Data")
    return signature


def _xmlsec_sign(root: etree._Element, key_file: Path, cert_file: Path) -> etree._Element:
    """xmlsec1 signs the first ``ds:Signature`` of the document: the caller leaves exactly one template."""
    xmlsec = shutil.which("xmlsec1")
    assert xmlsec is not None, "apt-get install -y xmlsec1"
    with tempfile.TemporaryDirectory() as directory:
        unsigned, signed = Path(directory) / "in.xml", Path(directory) / "out.xml"
        unsigned.write_bytes(serialize(root))
        done = subprocess.run(
            [
                xmlsec,
                "--sign",
                "--privkey-pem",
                f"{key_file},{cert_file}",
                "--id-attr:ID",
                "urn:oasis:names:tc:SAML:2.0:protocol:Response",
                "--id-attr:ID",
                "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
                "--output",
                str(signed),
                str(unsigned),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return parse(signed.read_bytes())


def _insert_template(target: etree._Element, *, sha1: bool) -> None:
    issuer = target.find("saml:Issuer", NS)
    position = list(target).index(issuer) + 1 if issuer is not None else 0
    methods = (RSA_SHA1, SHA1) if sha1 else (RSA_SHA256, SHA256)
    target.insert(position, _template(target.get("ID"), *methods))


def sign(
    root: etree._Element,
    *,
    key_file: Path,
    cert_file: Path,
    assertion: bool = True,
    response: bool = True,
    sha1: bool = False,
) -> etree._Element:
    """``root`` (a Response) with every old signature removed, then its assertion and/or the Response
    signed now with ``key_file``, as pysaml2's IdP signs (after the Issuer, assertion first). Returns the
    new root; ``root`` itself is left without signatures."""
    strip_signature(root)
    strip_signature(assertion_of(root))
    if assertion:
        _insert_template(assertion_of(root), sha1=sha1)
        root = _xmlsec_sign(root, key_file, cert_file)
    if response:
        _insert_template(root, sha1=sha1)  # precedes the assertion's signature in document order
        root = _xmlsec_sign(root, key_file, cert_file)
    return root
