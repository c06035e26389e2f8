"""Entente as the OpenID Provider of every workspace (OIDC Core 1.0 on RFC 6749, with authlib's server parts).

Modules: ``models`` (tables), ``keys`` (signing keys, JWKS, rotation), ``clients`` (registered
workspaces' clients), ``claims`` (who may get tokens for which workspace, and what they say),
``tokens`` (issuing, finding and revoking tokens), ``grants`` (authorization code + PKCE, refresh
rotation), ``errors`` (the OAuth error tree), ``server`` (the authlib AuthorizationServer and its
request adapter), ``discovery``,
``logout`` (back-channel logout tokens and their sender), ``revocation`` (session kill on leave),
``api`` (the HTTP edge) and ``cli`` (`entente client …`).
"""

__all__: list[str] = []
