"""The admin console: server-rendered pages for operators and partner admins (broker.console.api)."""

__all__: list[str] = []
