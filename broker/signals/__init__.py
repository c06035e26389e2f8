"""Entente as an OpenID Shared Signals Framework 1.0 transmitter: CAEP and RISC events for workspaces.

Modules: ``models`` (streams and queued SETs), ``set`` (RFC 8417 tokens, RFC 9493 subjects),
``emit`` (which SETs a session kill queues, in the kill's transaction), ``streams`` (SSF §8 stream
management), ``push`` (RFC 8935 sender), ``poll`` (RFC 8936), ``auth`` (receiver authentication),
``discovery`` (SSF §7 metadata), ``errors``, ``api`` (the HTTP edge) and ``cli``
(`entente signals …`).
"""

__all__: list[str] = []
