"""SAML 2.0 metadata (saml-metadata §2.4): the partner IdP's, read and checked; Entente's SP metadata, written.

An IdP's metadata is trusted because the operator gave it (a file, or an https URL fetched once at
``entente idp add``), so it is checked to fail closed at setup rather than at the first login:
exactly one IdP entity, an HTTP-Redirect SingleSignOnService, and at least one signing certificate
that is a real X.509 certificate with an RSA (2048 bits or more) or EC key. Metadata without a
usable certificate is refused, never taken to mean "accept anything".
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr  # noqa: S406 - escaping only, nothing is parsed

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.errors import BadRequest
from broker.federation.base import FederationError, InvalidAssertion
from broker.federation.saml_xml import DS, parse_xml

__all__ = [
    "BINDING_HTTP_POST",
    "BINDING_HTTP_REDIRECT",
    "IdPMetadata",
    "InvalidMetadata",
    "load_metadata_source",
    "parse_idp_metadata",
    "sp_metadata",
]

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
SAML2_PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
MAX_METADATA_BYTES = 1_048_576
MIN_RSA_BITS = 2048


class InvalidMetadata(FederationError):
    """IdP metadata Entente cannot trust or use (shown to the operator who adds the connection)."""


@dataclass(frozen=True)
class IdPMetadata:
    """What Entente uses from a partner IdP's metadata."""

    entity_id: str
    sso_url: str
    """The HTTP-Redirect SingleSignOnService location (saml-bindings §3.4)."""
    certificates: tuple[str, ...]
    """Base64 DER of every signing certificate (several during a key rollover)."""
    xml: str


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _check_url(url: str, what: str) -> str:
    """https, or http on a loopback address (tests, local IdPs)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        try:
            if parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback:
                return url
        except ValueError:
            pass
    raise InvalidMetadata(f"the {what} '{url[:200]}' must use https (plain http only on a loopback address)")


def _certificate(text: str | None) -> str:
    value = "".join((text or "").split())
    if not value:
        raise InvalidMetadata("the IdP metadata has an empty signing certificate; Entente refuses it (fail closed)")
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise InvalidMetadata("a signing certificate in the IdP metadata is not an X.509 certificate") from exc
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise InvalidMetadata(
            f"the IdP's signing key is RSA {key.key_size} bits; Entente requires at least {MIN_RSA_BITS}"
        )
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise InvalidMetadata("the IdP's signing key is neither RSA nor EC")
    return value


def parse_idp_metadata(xml: str | bytes) -> IdPMetadata:
    """The one IdP described by ``xml``, checked as the module docstring says, or ``InvalidMetadata``."""
    data = xml.encode() if isinstance(xml, str) else xml
    if len(data) > MAX_METADATA_BYTES:
        raise InvalidMetadata(f"the IdP metadata is larger than {MAX_METADATA_BYTES} bytes")
    try:
        root = parse_xml(data, what="IdP metadata")
    except InvalidAssertion as exc:
        raise InvalidMetadata(exc.detail) from exc
    if root.tag == _q(MD, "EntityDescriptor"):
        entities = [root]
    elif root.tag == _q(MD, "EntitiesDescriptor"):
        entities = list(root.iter(_q(MD, "EntityDescriptor")))
    else:
        raise InvalidMetadata("the file is not SAML 2.0 metadata (no md:EntityDescriptor at its root)")
    idps = [
        (entity, descriptor)
        for entity in entities
        for descriptor in entity.findall(_q(MD, "IDPSSODescriptor"))
        if SAML2_PROTOCOL in (descriptor.get("protocolSupportEnumeration") or "").split()
    ]
    if len(idps) != 1:
        raise InvalidMetadata(
            f"the metadata describes {len(idps)} SAML 2.0 identity providers; give the metadata of exactly one"
        )
    entity, descriptor = idps[0]
    entity_id = entity.get("entityID") or ""
    if not entity_id or len(entity_id) > 512:
        raise InvalidMetadata("the IdP metadata has no entityID (or one longer than 512 characters)")
    redirects = [
        service.get("Location") or ""
        for service in descriptor.findall(_q(MD, "SingleSignOnService"))
        if service.get("Binding") == BINDING_HTTP_REDIRECT
    ]
    if not redirects or not redirects[0]:
        raise InvalidMetadata("the IdP metadata offers no HTTP-Redirect SingleSignOnService, which Entente uses")
    certificates = tuple(
        _certificate(node.text)
        for key in descriptor.findall(_q(MD, "KeyDescriptor"))
        if key.get("use") in (None, "signing")
        for node in key.iter(_q(DS, "X509Certificate"))
    )
    if not certificates:
        raise InvalidMetadata(
            "the IdP metadata publishes no signing certificate; Entente could not check its signatures and refuses "
            "it (fail closed)"
        )
    return IdPMetadata(
        entity_id=entity_id,
        sso_url=_check_url(redirects[0], "SingleSignOnService URL"),
        certificates=certificates,
        xml=data.decode("utf-8"),
    )


def load_metadata_source(source: str, *, timeout: float) -> str:
    """The metadata XML of a file path, or of an https (or loopback http) URL fetched now."""
    if source.startswith(("https://", "http://")):
        url = _check_url(source, "metadata URL")
        try:
            response = httpx.get(url, timeout=timeout, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise InvalidMetadata(f"the IdP metadata at {url} could not be fetched ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise InvalidMetadata(f"the IdP metadata at {url} answered HTTP {response.status_code}")
        if len(response.content) > MAX_METADATA_BYTES:
            raise InvalidMetadata(f"the IdP metadata at {url} is larger than {MAX_METADATA_BYTES} bytes")
        return response.content.decode("utf-8", errors="strict")
    path = Path(source)
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise InvalidMetadata(f"the IdP metadata file {source} is larger than {MAX_METADATA_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"cannot read the IdP metadata file {source}: {exc}") from exc


def sp_metadata(*, entity_id: str, acs_url: str) -> str:
    """Entente's SP metadata for one connection: assertions must be signed; ACS by HTTP-POST only."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<md:EntityDescriptor xmlns:md="{MD}" entityID={quoteattr(entity_id)}>\n'
        '  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true"'
        f' protocolSupportEnumeration="{SAML2_PROTOCOL}">\n'
        "    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>\n"
        "    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>\n"
        f'    <md:AssertionConsumerService Binding="{BINDING_HTTP_POST}" Location={quoteattr(acs_url)}'
        ' index="0" isDefault="true"/>\n'
        "  </md:SPSSODescriptor>\n"
        "</md:EntityDescriptor>\n"
    )
