"""SCIM 2.0 server for partner feeds (RFC 7643 schema, RFC 7644 protocol)."""

__all__: list[str] = []
