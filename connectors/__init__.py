"""Downstream workspace connectors (one module per kind behind one narrow interface): see issue 4."""

__all__: list[str] = []
