"""The provider's errors: authlib's OAuth 2.0 exception classes, each carrying its RFC error code.

Raised by the grants and endpoints (ours and authlib's), never turned into ``HTTPException``;
``broker.provider.api`` is the only place they become HTTP::

    OAuth2Error                         error code                  HTTP
    ├── InvalidRequestError             invalid_request             400  RFC 6749 §4.1.2.1, §5.2
    ├── InvalidClientError              invalid_client              400, 401 after HTTP Basic (§5.2)
    ├── InvalidGrantError               invalid_grant               400  code replay, PKCE mismatch,
    │                                                                    refresh reuse, access ended
    ├── UnauthorizedClientError         unauthorized_client         400
    ├── UnsupportedGrantTypeError       unsupported_grant_type      400
    ├── UnsupportedResponseTypeError    unsupported_response_type   400/302
    ├── UnsupportedTokenType            unsupported_token_type      400  RFC 7009 §2.2.1
    ├── InvalidScopeError               invalid_scope               400/302
    ├── AccessDeniedError               access_denied               302  no grant for the workspace
    ├── LoginRequiredError              login_required              302  OIDC Core §3.1.2.6 (prompt=none)
    ├── RequestNotSupportedError        request_not_supported       302  OIDC Core §6
    ├── RequestURINotSupportedError     request_uri_not_supported   302  OIDC Core §6
    ├── InvalidTokenError               invalid_token               401  RFC 6750 §3.1 (UserInfo)
    └── InsufficientScopeError          insufficient_scope          403  RFC 6750 §3.1

At the authorization endpoint an error goes back to the client as a redirect only once the client
and its exact redirect URI are known (RFC 6749 §4.1.2.1), with ``state`` and ``iss`` (RFC 9207
§2); otherwise, and at every other endpoint, it is an RFC 6749 §5.2 JSON body
(``{"error", "error_description"}``, ``Cache-Control: no-store``).
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
    UnsupportedResponseTypeError,
    UnsupportedTokenTypeError,
)
from authlib.oauth2.rfc6750 import InsufficientScopeError, InvalidTokenError
from authlib.oidc.core.errors import LoginRequiredError, RequestNotSupportedError, RequestURINotSupportedError

__all__ = [
    "AccessDeniedError",
    "InsufficientScopeError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidScopeError",
    "InvalidTokenError",
    "LoginRequiredError",
    "OAuth2Error",
    "RequestNotSupportedError",
    "RequestURINotSupportedError",
    "UnauthorizedClientError",
    "UnsupportedGrantTypeError",
    "UnsupportedResponseTypeError",
    "UnsupportedTokenType",
]


class UnsupportedTokenType(UnsupportedTokenTypeError):  # type: ignore[misc]
    """RFC 7009 §2.2.1 ``unsupported_token_type``, answered 400 as RFC 6749 §5.2 says.

    authlib derives its class from a 401 ``ForbiddenError``, as if the client had failed to authenticate.
    """

    status_code = 400
