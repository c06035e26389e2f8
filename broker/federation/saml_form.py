"""The SAML HTTP-POST binding's form, read bounded; apart from the adapter so routes need not import pysaml2."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

from starlette.requests import Request

from broker.federation.base import InvalidAssertion

__all__ = ["MAX_RESPONSE_BYTES", "posted_form"]

MAX_RESPONSE_BYTES = 262_144


async def posted_form(request: Request) -> Mapping[str, str]:
    """The request's url-encoded form (the HTTP-POST binding), read once and kept on ``request.state``.

    At most ``MAX_RESPONSE_BYTES`` are read, whatever Content-Length says; a field given twice is refused.
    """
    cached: Mapping[str, str] | None = getattr(request.state, "saml_form", None)
    if cached is not None:
        return cached
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidAssertion("a SAML response must be posted as application/x-www-form-urlencoded (HTTP-POST)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise InvalidAssertion(f"the SAML response is larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidAssertion("the SAML response form is malformed") from exc
    if any(len(values) > 1 for values in fields.values()):
        raise InvalidAssertion("the SAML response form gives a field twice")
    form = {name: values[0] for name, values in fields.items()}
    request.state.saml_form = form
    return form
