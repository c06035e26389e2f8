"""saml-profiles §4.1.4 (Web Browser SSO: use of the Response and its assertion) checked on the one assertion.

Each rule refuses with its own message, so an operator reading ``login.failed`` knows which one
failed: Issuer, Destination, InResponseTo, bearer SubjectConfirmation (Recipient, InResponseTo,
NotOnOrAfter), Conditions (NotBefore, NotOnOrAfter, AudienceRestriction), AuthnStatement. Times are
compared with ``leeway`` seconds of clock skew either way. pysaml2 checks most of these again while
it verifies the signatures (``broker.federation.saml``); these checks are ours so that a refusal is
precise and does not depend on which of them a library version happens to skip.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET  # noqa: S405 - element types only
from dataclasses import dataclass

from broker.federation.base import InvalidAssertion, UntrustedIssuer
from broker.federation.saml_xml import ASSERTION, ResponseShape

__all__ = ["Expected", "Validity", "check_response", "parse_instant"]

BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
_INSTANT = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")


def _q(name: str) -> str:
    return f"{{{ASSERTION}}}{name}"


@dataclass(frozen=True)
class Expected:
    """What the answer to this login must say, from the connection and the login transaction."""

    idp_entity_id: str
    sp_entity_id: str
    acs_url: str
    request_id: str
    """The ID of the AuthnRequest this login sent (derived from the transaction's secret)."""
    now: dt.datetime
    leeway: int
    max_age: int
    """Oldest acceptable assertion ``IssueInstant``, in seconds: how long a login may take."""


@dataclass(frozen=True)
class Validity:
    """What the replay ledger needs to keep the assertion's ID for as long as it could be accepted."""

    assertion_id: str
    not_on_or_after: dt.datetime


def parse_instant(value: str | None, *, what: str) -> dt.datetime:
    """An xs:dateTime in UTC (saml-core §1.3.3); fractions beyond microseconds are cut, no zone means UTC."""
    match = _INSTANT.match((value or "").strip())
    if match is None:
        raise InvalidAssertion(f"the assertion's {what} '{(value or '')[:40]}' is not a valid time")
    base, fraction, zone = match.groups()
    text = base + (fraction[:7] if fraction else "") + ("+00:00" if zone in (None, "Z") else zone)
    try:
        return dt.datetime.fromisoformat(text).astimezone(dt.UTC)
    except ValueError as exc:
        raise InvalidAssertion(f"the assertion's {what} '{value[:40] if value else ''}' is not a valid time") from exc


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_issuers(shape: ResponseShape, expected: Expected) -> None:
    issuer = shape.assertion.find(_q("Issuer"))
    value = issuer.text if issuer is not None else None
    if value != expected.idp_entity_id:
        raise UntrustedIssuer(
            f"the assertion was issued by '{(value or '')[:200]}', not by this connection's identity provider "
            f"'{expected.idp_entity_id}'"
        )
    outer = shape.response.find(_q("Issuer"))
    if outer is not None and outer.text != expected.idp_entity_id:
        raise UntrustedIssuer(
            f"the SAML response was issued by '{(outer.text or '')[:200]}', not by this connection's identity "
            f"provider '{expected.idp_entity_id}'"
        )


def _check_response(response: ET.Element, expected: Expected) -> None:
    destination = response.get("Destination")
    if destination is None:
        raise InvalidAssertion("the SAML response names no Destination; Entente requires it to be this ACS URL")
    if destination != expected.acs_url:
        raise InvalidAssertion(
            f"the SAML response is addressed to '{destination[:200]}' (Destination), not to this connection's "
            f"ACS URL '{expected.acs_url}'"
        )
    in_response_to = response.get("InResponseTo")
    if in_response_to is None:
        raise InvalidAssertion(
            "the SAML response is unsolicited (no InResponseTo); Entente accepts only answers to a sign-in it started"
        )
    if in_response_to != expected.request_id:
        raise InvalidAssertion(
            f"the SAML response answers another sign-in request (InResponseTo '{in_response_to[:80]}'), not the one "
            "started in this browser"
        )
    if response.get("Version") != "2.0":
        raise InvalidAssertion(f"the SAML response has version '{(response.get('Version') or '')[:10]}', not 2.0")


def _check_time_window(
    not_before: str | None, not_on_or_after: str | None, expected: Expected, where: str
) -> dt.datetime | None:
    leeway = dt.timedelta(seconds=expected.leeway)
    if not_before is not None:
        start = parse_instant(not_before, what=f"{where} NotBefore")
        if start - leeway > expected.now:
            raise InvalidAssertion(
                f"the assertion is not valid before {_stamp(start)} ({where} NotBefore is in the future; "
                f"Entente's clock says {_stamp(expected.now)})"
            )
    if not_on_or_after is None:
        return None
    end = parse_instant(not_on_or_after, what=f"{where} NotOnOrAfter")
    if end + leeway <= expected.now:
        raise InvalidAssertion(
            f"the assertion expired at {_stamp(end)} ({where} NotOnOrAfter; Entente's clock says "
            f"{_stamp(expected.now)})"
        )
    return end


def _check_subject(assertion: ET.Element, expected: Expected) -> list[dt.datetime]:
    subject = assertion.find(_q("Subject"))
    if subject is None or subject.find(_q("NameID")) is None:
        raise InvalidAssertion("the assertion has no Subject with a NameID")
    bearers = [c for c in subject.findall(_q("SubjectConfirmation")) if c.get("Method") == BEARER]
    if not bearers:
        raise InvalidAssertion("the assertion has no bearer SubjectConfirmation (saml-profiles §4.1.4.2)")
    ends: list[dt.datetime] = []
    for confirmation in bearers:
        data = confirmation.find(_q("SubjectConfirmationData"))
        if data is None:
            raise InvalidAssertion("the assertion's bearer SubjectConfirmation has no SubjectConfirmationData")
        recipient = data.get("Recipient")
        if recipient != expected.acs_url:
            raise InvalidAssertion(
                f"the assertion's Recipient '{(recipient or '')[:200]}' is not this connection's ACS URL "
                f"'{expected.acs_url}'"
            )
        in_response_to = data.get("InResponseTo")
        if in_response_to != expected.request_id:
            raise InvalidAssertion(
                f"the assertion's SubjectConfirmationData answers another sign-in request (InResponseTo "
                f"'{(in_response_to or '')[:80]}'), not the one started in this browser"
            )
        if data.get("NotOnOrAfter") is None:
            raise InvalidAssertion("the assertion's bearer SubjectConfirmationData has no NotOnOrAfter")
        end = _check_time_window(data.get("NotBefore"), data.get("NotOnOrAfter"), expected, "SubjectConfirmationData")
        assert end is not None  # NotOnOrAfter is present
        ends.append(end)
    return ends


def _check_conditions(assertion: ET.Element, expected: Expected) -> dt.datetime | None:
    conditions = assertion.find(_q("Conditions"))
    if conditions is None:
        raise InvalidAssertion("the assertion has no Conditions, so no AudienceRestriction naming Entente")
    end = _check_time_window(conditions.get("NotBefore"), conditions.get("NotOnOrAfter"), expected, "Conditions")
    restrictions = conditions.findall(_q("AudienceRestriction"))
    if not restrictions:
        raise InvalidAssertion("the assertion has no AudienceRestriction; Entente requires one naming it")
    for restriction in restrictions:  # saml-core §2.5.1.4: every restriction must be met
        audiences = [a.text or "" for a in restriction.findall(_q("Audience"))]
        if expected.sp_entity_id not in audiences:
            shown = ", ".join(f"'{a[:200]}'" for a in audiences) or "nobody"
            raise InvalidAssertion(
                f"the assertion is meant for {shown} (Audience), not for this connection's entity ID "
                f"'{expected.sp_entity_id}'"
            )
    return end


def _check_issue_instant(assertion: ET.Element, expected: Expected) -> None:
    issued = parse_instant(assertion.get("IssueInstant"), what="IssueInstant")
    leeway = dt.timedelta(seconds=expected.leeway)
    if issued - leeway > expected.now:
        raise InvalidAssertion(f"the assertion claims to be issued in the future ({_stamp(issued)})")
    if issued + dt.timedelta(seconds=expected.max_age) + leeway < expected.now:
        raise InvalidAssertion(
            f"the assertion was issued at {_stamp(issued)}, longer ago than a sign-in may take ({expected.max_age} s)"
        )


def check_response(shape: ResponseShape, expected: Expected) -> Validity:
    """Every rule of the module docstring, in that order; the assertion's ID and how long it stays valid."""
    _check_issuers(shape, expected)
    _check_response(shape.response, expected)
    assertion = shape.assertion
    if assertion.get("Version") != "2.0":
        raise InvalidAssertion(f"the assertion has version '{(assertion.get('Version') or '')[:10]}', not 2.0")
    _check_issue_instant(assertion, expected)
    ends = _check_subject(assertion, expected)
    conditions_end = _check_conditions(assertion, expected)
    if conditions_end is not None:
        ends.append(conditions_end)
    if assertion.find(_q("AuthnStatement")) is None:
        raise InvalidAssertion("the assertion has no AuthnStatement: it does not say the person signed in")
    for statement in assertion.findall(_q("AuthnStatement")):
        session_end = statement.get("SessionNotOnOrAfter")
        if session_end is not None and parse_instant(session_end, what="SessionNotOnOrAfter") <= expected.now:
            raise InvalidAssertion("the identity provider's session for this assertion has already ended")
    assertion_id = assertion.get("ID") or ""
    if not assertion_id or len(assertion_id) > 256:
        raise InvalidAssertion("the assertion's ID is missing or longer than 256 characters")
    return Validity(assertion_id=assertion_id, not_on_or_after=max(ends) + dt.timedelta(seconds=expected.leeway))
