"""The one settings object: every knob Entente has, read from ``ENTENTE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Configuration of one Entente process.

    Values come from ``ENTENTE_<NAME>`` environment variables, or from files named
    ``<name>`` in ``ENTENTE_SECRETS_DIR`` (mounted Kubernetes secrets), validated at start-up.
    """

    model_config = SettingsConfigDict(env_prefix="ENTENTE_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./entente.db",
        description="SQLAlchemy URL. The embedded default is a SQLite file in WAL mode; "
        "use postgresql+psycopg://user@host/db in production.",
    )
    database_pool_size: int = Field(default=10, ge=1, description="PostgreSQL connection pool size.")
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="External URL of this Entente, used in SCIM meta.location and Location headers.",
    )
    host: str = Field(default="127.0.0.1", description="Address `entente serve` binds to.")
    port: int = Field(default=8000, description="Port `entente serve` binds to.")
    workers: int = Field(
        default=1, ge=1, description="Server processes `entente serve` runs (PostgreSQL: up to one per core)."
    )
    scim_max_results: int = Field(default=1000, ge=1, description="Largest page a SCIM list returns.")
    scim_default_count: int = Field(default=100, ge=0, description="Page size when a SCIM list gives no count.")
    scim_bulk_max_operations: int = Field(default=1000, ge=1, description="Advertised and enforced Bulk limit.")
    scim_bulk_max_payload_bytes: int = Field(
        default=1_048_576, ge=1024, description="Advertised and enforced Bulk body limit, in bytes."
    )
    scim_max_filter_length: int = Field(
        default=4096, ge=64, description="Longest SCIM filter accepted; longer ones answer 400 invalidFilter."
    )
    scim_token_default_days: int = Field(
        default=365, ge=1, description="Lifetime of a SCIM bearer token when `--expires` is not given."
    )
    scim_auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a process reuses a successful SCIM token check. Revocation in the same process "
        "applies at once; from another process (the CLI, another worker) within this bound. 0 disables it.",
    )
    secrets_dir: Path | None = Field(default=None, description="Folder of mounted secret files.")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) sealing workspace credentials at rest, comma-separated, newest first "
        "(older keys still open old values, for rotation). Unset: a key file is made at secret_key_file.",
    )
    secret_key_file: str = Field(
        default="./entente.key", description="Key file created (mode 0600) when secret_key is unset."
    )
    delivery_worker: bool = Field(
        default=True, description="Run the lifecycle engine and delivery worker inside `entente serve`."
    )
    delivery_batch_size: int = Field(default=200, ge=1, description="Tasks one worker claims at a time.")
    delivery_max_attempts: int = Field(
        default=12, ge=1, description="Attempts before a task is moved to the dead-letter state."
    )
    delivery_backoff_seconds: float = Field(
        default=0.5, gt=0, description="First retry delay; doubles per attempt, with full jitter."
    )
    delivery_backoff_max_seconds: float = Field(default=300.0, gt=0, description="Longest retry delay.")
    delivery_lease_seconds: float = Field(
        default=60.0, gt=0, description="A claimed task whose worker died is claimable again after this."
    )
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, description="HTTP timeout towards workspaces.")
    delivery_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Safety-net poll for work another process accepted; work accepted in this process "
        "wakes the worker at once.",
    )
    grant_expiry_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often the scheduler ends grants past their end date."
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
