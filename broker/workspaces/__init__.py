"""Shared workspaces: downstream app instances, their sealed connector config and what access means there."""

__all__: list[str] = []
