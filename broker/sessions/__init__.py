"""Entente's own login sessions: what federated login creates and what a leaver's kill switch ends."""

__all__: list[str] = []
