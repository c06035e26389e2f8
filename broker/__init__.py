"""Entente: a neutral identity and provisioning broker between partner companies."""

__all__: list[str] = []
