"""Declarative access policies: the model (source of policies/schema.json), the loader and the pure evaluator."""

__all__: list[str] = []
