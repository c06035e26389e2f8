"""Inbound federation: each partner's enterprise IdPs (OIDC, SAML) behind one adapter interface."""

__all__: list[str] = []
