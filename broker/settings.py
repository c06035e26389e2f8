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
        description="How long a process reuses a verified SCIM token (its partner and verified domains). "
        "Revocation, expiry and suspension are still confirmed on every request. 0 disables it.",
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
    audit_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 key signing audit checkpoints: base64 of a 32-byte seed, or a PKCS#8 PEM. "
        "Unset: a key file is made at audit_signing_key_file.",
    )
    audit_signing_key_file: str = Field(
        default="./entente-audit.key",
        description="Audit signing key file (PKCS#8 PEM), created with mode 0600 when audit_signing_key is unset.",
    )
    audit_origin: str | None = Field(
        default=None,
        pattern=r"^[^\s+]+$",
        description="Checkpoint origin line and signing key name (no spaces, no '+'); "
        "default '<host of public_base_url>/audit'. Changing it starts a new log identity for verifiers.",
    )
    audit_checkpoint_interval_seconds: float = Field(
        default=10.0, gt=0, description="Longest time new audit records wait for a signed checkpoint."
    )
    audit_checkpoint_max_records: int = Field(
        default=1000, ge=1, description="New audit records that trigger a checkpoint before the interval is up."
    )
    audit_operator_token_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (hex) of the operator bearer token of the audit API (`entente audit operator-token`); "
        "unset: operators cannot use the audit API.",
    )
    login_session_minutes: int = Field(
        default=480, ge=1, description="Lifetime of a login session at Entente after a federated login."
    )
    login_transaction_seconds: int = Field(
        default=600,
        ge=30,
        description="How long a started login may take at the partner's IdP; also the oldest ID token `iat` "
        "accepted (plus the clock skew).",
    )
    federation_clock_skew_seconds: int = Field(
        default=60, ge=0, le=300, description="Leeway for ID token `exp`, `iat` and `nbf` against our clock."
    )
    federation_http_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of each request to a partner IdP (discovery, JWKS, token, userinfo)."
    )
    federation_metadata_ttl_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How long an IdP's discovery document and JWKS are reused; an unknown `kid` refetches the JWKS "
        "at once (key rotation).",
    )
    oidc_access_token_seconds: int = Field(
        default=300, ge=60, le=600, description="Lifetime of the OIDC provider's access tokens (JWT, RFC 9068)."
    )
    oidc_id_token_seconds: int = Field(default=300, ge=60, le=3600, description="Lifetime of ID tokens.")
    oidc_code_seconds: int = Field(
        default=60, ge=10, le=600, description="Lifetime of an authorization code (single use)."
    )
    oidc_refresh_token_days: float = Field(
        default=14.0, gt=0, description="Idle lifetime of a refresh token; each use rotates it and restarts this."
    )
    oidc_grant_max_days: float = Field(
        default=90.0, gt=0, description="Absolute lifetime of a refresh token family, however often it is rotated."
    )
    oidc_key_rotation_days: float = Field(
        default=30.0, gt=0, description="Age at which the ID token signing key is replaced by a new one."
    )
    oidc_key_publish_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How long a new signing key is published in the JWKS before it signs anything "
        "(longer than relying parties cache the JWKS).",
    )
    oidc_login_path: str = Field(
        default="/login", description="Entente's login page; /oidc/authorize sends people without a session there."
    )
    oidc_logout_sender: bool = Field(
        default=True, description="Send queued back-channel logout tokens from `entente serve`."
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
