"""SAML 2.0 Web Browser SSO (saml-profiles §4.1) as a service provider of one partner's IdP.

AuthnRequest by HTTP-Redirect (saml-bindings §3.4), Response by HTTP-POST to the ACS (§3.5), which is
the connection's callback URL (``/login/callback/<connection id>``); Entente's SP entity ID is the
URL of its metadata (``/login/saml/<connection id>/metadata``), one per connection, so an assertion
made for one partner's connection is never accepted by another's. pysaml2 builds the request and
verifies the signatures, through xmlsec1 and with only the certificates of the IdP's metadata;
before that, ``broker.federation.saml_xml`` refuses every document that is not exactly one signed
assertion (XXE, comments, signature wrapping), and ``broker.federation.saml_checks`` refuses, each
with its own message, a wrong Issuer, Destination, Recipient, Audience or InResponseTo and a time
outside NotBefore/NotOnOrAfter. Accepted assertions are then spent in the replay ledger
(``broker.federation.saml_replay``).

The server owns the login's state (after dex's ``SAMLConnector``): the AuthnRequest ``ID`` is derived
from the login transaction's secret with HMAC-SHA256 (as ``oidc.py`` derives its nonce), so the
sealed transaction cookie is what remembers it for the ``InResponseTo`` check, and ``RelayState`` is
the transaction's ``state``.

Identity mapping (one ``FederatedIdentity`` leaves this module):

- ``subject``: the NameID value (use a persistent NameID; ``--bind externalId`` compares it exactly);
- ``issuer``: the assertion's Issuer, which must be the metadata's entityID;
- ``attributes``: every attribute under its ``Name``, its ``FriendlyName`` and pysaml2's local name
  (``urn:oid:0.9.2342.19200300.100.1.3`` is also ``mail``), plus ``email``, ``name`` and ``groups``
  below, so ``--username-claim`` can name any of them;
- ``email``: the first of ``mail``, ``email``, ``emailAddress``, the WS-Federation ``emailaddress``
  claim; else the NameID when its format is ``emailAddress``;
- ``email_verified``: SAML has no such claim, so True only when the connection vouches for its IdP
  (``entente idp add --saml-email-verified``) and there is an address;
- ``name``: ``displayName``, ``cn`` or the WS-Federation ``name``/``displayname`` claims;
- ``groups``: ``groups``, ``memberOf``, ``isMemberOf`` (eduPerson) and the WS-Federation ``groups`` claim;
- ``authn_at``: the AuthnStatement's ``AuthnInstant``; ``session_ref``: its ``SessionIndex``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.response import AuthnResponse, IncorrectlySigned, UnsolicitedResponse
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS
from saml2.sigver import SigverError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.federation.base import FederatedIdentity, InvalidAssertion, ReplayDetected
from broker.federation.saml_checks import Expected, Validity, check_response, parse_instant
from broker.federation.saml_form import posted_form
from broker.federation.saml_metadata import IdPMetadata, InvalidMetadata
from broker.federation.saml_replay import AssertionLedger, DatabaseLedger
from broker.federation.saml_xml import parse_response
from broker.threads import in_thread

__all__ = ["SAMLAdapter", "SAMLConfig", "derive_request_id"]

"""Largest ACS form accepted (a signed response with many groups is tens of kilobytes)."""
MAX_SUBJECT = 512
"""Longest NameID accepted (``LoginSession.upstream_subject``)."""
EMAIL_ATTRIBUTES = (
    "mail",
    "email",
    "emailAddress",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
)
NAME_ATTRIBUTES = (
    "displayName",
    "cn",
    "http://schemas.microsoft.com/identity/claims/displayname",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
)
GROUP_ATTRIBUTES = (
    "groups",
    "memberOf",
    "isMemberOf",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
)
_SIGNATURE_REFUSED = (
    "the SAML signature does not verify with the identity provider's certificate from its metadata "
    "(signed with another key, or the signed content was changed after signing)"
)


@dataclass(frozen=True)
class SAMLConfig:
    """One SAML IdP connection, as the adapter needs it."""

    connection_id: str
    tenant_id: str
    metadata: IdPMetadata
    sp_entity_id: str
    """``<public base URL>/login/saml/<connection id>/metadata``: the Audience assertions must name."""
    acs_url: str
    """``<public base URL>/login/callback/<connection id>``: the Destination and Recipient."""
    email_verified: bool
    """The connection vouches that the IdP only asserts addresses it verified."""
    xmlsec_binary: str
    leeway: int = 60
    max_age: int = 600


def derive_request_id(secret: str) -> str:
    """The AuthnRequest ``ID`` (an xs:ID: starts with a letter or underscore) of the login whose secret this is."""
    return "_" + hmac.new(secret.encode(), b"entente/saml/authn-request-id", hashlib.sha256).hexdigest()


def _strings(values: list[Any]) -> tuple[str, ...]:
    return tuple(v for v in values if isinstance(v, str) and v)


def _first(attributes: Mapping[str, tuple[str, ...]], names: tuple[str, ...]) -> str | None:
    for name in names:
        values = attributes.get(name)
        if values:
            return values[0]
    return None


class SAMLAdapter:
    """``IdPAdapter`` for one SAML connection; keeps its pysaml2 client (and parsed metadata) between logins."""

    protocol: ClassVar[Literal["oidc", "saml"]] = "saml"

    def __init__(
        self,
        config: SAMLConfig,
        *,
        ledger: AssertionLedger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``ledger`` defaults to the serving app's database (``request.app.state.engine``) at each login."""
        self.config = config
        self._ledger = ledger
        self._clock = clock
        sp = SPConfig()
        options: dict[str, Any] = {
            "entityid": config.sp_entity_id,
            "service": {
                "sp": {
                    "endpoints": {"assertion_consumer_service": [(config.acs_url, BINDING_HTTP_POST)]},
                    "want_assertions_signed": True,
                    "want_response_signed": False,
                    "allow_unsolicited": False,
                    "authn_requests_signed": False,
                }
            },
            "metadata": {"inline": [config.metadata.xml]},
            "xmlsec_binary": config.xmlsec_binary,
            "only_use_keys_in_metadata": True,
            "accepted_time_diff": config.leeway,
            "allow_unknown_attributes": True,
        }
        try:
            self._client = Saml2Client(config=sp.load(options))
        except Exception as exc:  # pysaml2 refuses metadata with its own exception types (e.g. expired validUntil)
            raise InvalidMetadata(f"pysaml2 cannot use the IdP metadata ({type(exc).__name__}: {exc})"[:300]) from exc

    async def begin(self, request: Request, *, state: str, nonce: str, login_hint: str | None = None) -> Response:
        """303 to the IdP's SingleSignOnService with an AuthnRequest (HTTP-Redirect) and ``RelayState=state``.

        ``login_hint`` is not sent: an AuthnRequest's ``Subject`` would ask the IdP for that exact
        NameID, which the partner's IdP may not use.
        """
        destination = self.config.metadata.sso_url
        _, authn_request = self._client.create_authn_request(
            destination, binding=BINDING_HTTP_POST, message_id=derive_request_id(nonce), allow_create="true"
        )
        http = self._client.apply_binding(BINDING_HTTP_REDIRECT, str(authn_request), destination, relay_state=state)
        location = dict(http["headers"])["Location"]
        return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})

    async def complete(self, request: Request, *, state: str, nonce: str) -> FederatedIdentity:
        """Check shape, the profile's rules, then the signatures; spend the assertion; the identity."""
        form = await posted_form(request)
        if not hmac.compare_digest((form.get("RelayState") or "").encode(), state.encode()):
            raise ReplayDetected("this SAML response does not belong to the sign-in started in this browser")
        encoded = form.get("SAMLResponse")
        if not encoded:
            raise InvalidAssertion("the sign-in response carries no SAMLResponse (SAML HTTP-POST binding)")
        try:
            document = base64.b64decode("".join(encoded.split()), validate=True)  # some IdPs wrap at 76 columns
            text = document.decode("utf-8")  # what pysaml2 and xmlsec1 are given, byte for byte
        except (binascii.Error, ValueError) as exc:
            raise InvalidAssertion("the SAMLResponse is not base64 of a UTF-8 XML document") from exc
        shape = parse_response(document)
        request_id = derive_request_id(nonce)
        validity = check_response(
            shape,
            Expected(
                idp_entity_id=self.config.metadata.entity_id,
                sp_entity_id=self.config.sp_entity_id,
                acs_url=self.config.acs_url,
                request_id=request_id,
                now=dt.datetime.fromtimestamp(self._clock(), dt.UTC),
                leeway=self.config.leeway,
                max_age=self.config.max_age,
            ),
        )
        verified = await in_thread(request.app.state, self._verify, text, request_id, validity)
        identity = self._identity(verified)
        ledger = self._ledger or DatabaseLedger(request.app.state.engine)
        await in_thread(
            request.app.state,
            ledger.consume,
            connection_id=self.config.connection_id,
            assertion_id=validity.assertion_id,
            expires_at=validity.not_on_or_after,
        )
        return identity

    def _verify(self, document: str, request_id: str, validity: Validity) -> AuthnResponse:
        """pysaml2's verification (signatures by xmlsec1 with the metadata's certificates only). Blocking."""
        response = AuthnResponse(
            self._client.sec,
            self._client.config.attribute_converters,
            self.config.sp_entity_id,
            return_addrs=[self.config.acs_url],
            outstanding_queries={request_id: self.config.connection_id},
            timeslack=self.config.leeway,
            asynchop=True,
            allow_unsolicited=False,
            want_assertions_signed=True,
            want_response_signed=False,
            conv_info={"entity_id": self.config.acs_url},
            allow_unknown_attributes=True,
        )
        try:
            loaded = response.loads(document, False, origxml=document)
            verified = loaded.verify()
        except (SigverError, IncorrectlySigned) as exc:
            raise InvalidAssertion(_SIGNATURE_REFUSED) from exc
        except UnsolicitedResponse as exc:
            raise InvalidAssertion("pysaml2 found the SAML response unsolicited (InResponseTo)") from exc
        except Exception as exc:  # pysaml2 signals many checks with bare Exception/ValueError
            raise InvalidAssertion(
                f"the SAML response failed pysaml2's checks ({type(exc).__name__}: {exc})"[:300]
            ) from exc
        if not isinstance(verified, AuthnResponse) or verified.assertion is None:
            raise InvalidAssertion("the SAML response failed pysaml2's checks (no verified assertion)")
        if verified.assertion.id != validity.assertion_id:
            raise InvalidAssertion("the verified assertion is not the one that was checked (signature wrapping)")
        return verified

    def _attributes(self, verified: AuthnResponse) -> dict[str, tuple[str, ...]]:
        collected: dict[str, list[str]] = {}
        for statement in verified.assertion.attribute_statement:
            for attribute in statement.attribute:
                values = [value.text for value in attribute.attribute_value]
                for key in (attribute.name, attribute.friendly_name):
                    if key:
                        collected.setdefault(key, []).extend(v for v in values if isinstance(v, str))
        for key, values in (verified.ava or {}).items():
            if key not in collected:
                collected[key] = [v for v in values if isinstance(v, str)]
        attributes = {key: _strings(values) for key, values in collected.items() if _strings(values)}
        groups = tuple(dict.fromkeys(v for name in GROUP_ATTRIBUTES for v in attributes.get(name, ())))
        if groups:
            attributes["groups"] = groups
        name = _first(attributes, NAME_ATTRIBUTES)
        if name is not None:
            attributes["name"] = (name,)
        return attributes

    def _identity(self, verified: AuthnResponse) -> FederatedIdentity:
        """The mapping of the module docstring, from the verified assertion only."""
        assertion = verified.assertion
        name_id = verified.name_id
        subject = (name_id.text or "").strip() if name_id is not None else ""
        if not subject or len(subject) > MAX_SUBJECT:
            raise InvalidAssertion(f"the assertion's NameID is empty or longer than {MAX_SUBJECT} characters")
        attributes = self._attributes(verified)
        email = _first(attributes, EMAIL_ATTRIBUTES)
        if email is None and name_id.format == NAMEID_FORMAT_EMAILADDRESS:
            email = subject
        if email is not None and ("@" not in email or len(email) > 320):
            email = None
        if email is not None:
            attributes["email"] = (email,)
        statement = assertion.authn_statement[0]
        session_index = statement.session_index
        return FederatedIdentity(
            tenant_id=self.config.tenant_id,
            issuer=assertion.issuer.text,
            subject=subject,
            email=email,
            email_verified=self.config.email_verified and email is not None,
            groups=frozenset(attributes.get("groups", ())),
            attributes=attributes,
            authn_at=parse_instant(statement.authn_instant, what="AuthnInstant"),
            session_ref=session_index if isinstance(session_index, str) and len(session_index) <= 512 else None,
        )
