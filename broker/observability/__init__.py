"""Operations: Prometheus metrics, health and readiness endpoints, structured logs, request ids.

Import the modules themselves (``api``, ``http``, ``logging``, ``metrics``): this package imports
nothing, because uvicorn's spawned server processes unpickle the log configuration (which names
``broker.observability.logging``) before they can answer the supervisor's health check, and a
heavy import there got them killed as hung.
"""

__all__: list[str] = []
