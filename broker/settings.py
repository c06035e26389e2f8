"""The one settings object: every knob Entente has, read from ``ENTENTE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
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
    delivery_wake_spacing_ms: float = Field(
        default=20.0,
        ge=0,
        description="Least time between two wake-ups of a background loop by commits: under a stream of "
        "SCIM writes one engine pass takes many events instead of one each (an isolated change waits for none).",
    )
    thread_switch_interval_ms: float | None = Field(
        default=None,
        gt=0,
        description="How long a thread of `entente serve` may hold Python's interpreter lock while another "
        "waits for it (sys.setswitchinterval). Unset: 0.5 ms on PostgreSQL, where a request thread back from "
        "each database round trip would otherwise wait up to Python's 5 ms behind the delivery worker and "
        "the engine; Python's 5 ms on SQLite, where requests make no round trips and measured no gain.",
    )
    delivery_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Safety-net poll for work another process accepted; work accepted in this process "
        "wakes the worker at once.",
    )
    grant_expiry_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often the scheduler ends grants past their end date."
    )
    report_inactive_days: int = Field(
        default=90,
        ge=0,
        description="Stale-access report: active people with no login and no SCIM change for this many days.",
    )
    report_silent_feed_days: int = Field(
        default=30, ge=0, description="Stale-access report: partners whose SCIM feed changed nothing for this long."
    )
    report_token_expiry_days: int = Field(
        default=30, ge=0, description="Stale-access report: SCIM tokens expiring within this many days."
    )
    report_token_unused_days: int = Field(
        default=30, ge=0, description="Stale-access report: SCIM tokens not used for this many days."
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
    siem_webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="SIEM endpoint receiving the audit log as Standard Webhooks batches (POST); needs "
        "siem_webhook_secret.",
    )
    siem_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Standard Webhooks signing secret of the SIEM webhook: 'whsec_' + base64 of 24 to 64 random bytes.",
    )
    siem_syslog: str | None = Field(
        default=None,
        description="SIEM syslog receiver of the audit log, 'udp://host:port' or 'tcp://host:port' "
        "(RFC 5424 messages; TCP framed by octet counting, RFC 6587).",
    )
    siem_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Audit records per SIEM webhook request or syslog connection."
    )

    @field_validator("siem_webhook_secret")
    @classmethod
    def _check_siem_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """Fail at load, not at the first batch, when the secret is no Standard Webhooks secret."""
        if value is not None:
            from connectors.webhook import webhook_hmac_key  # the connector's own parser: one definition

            webhook_hmac_key(value.get_secret_value())
        return value

    @field_validator("siem_syslog")
    @classmethod
    def _check_siem_syslog(cls, value: str | None) -> str | None:
        if value is not None:
            from broker.audit.syslog import SyslogTarget  # pure parsing; imported late, it is not a setting

            SyslogTarget.parse(value)
        return value

    @model_validator(mode="after")
    def _check_siem_webhook(self) -> Settings:
        if (self.siem_webhook_url is None) != (self.siem_webhook_secret is None):
            raise ValueError("ENTENTE_SIEM_WEBHOOK_URL and ENTENTE_SIEM_WEBHOOK_SECRET are set together or not at all")
        return self

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
    saml_xmlsec_binary: str | None = Field(
        default=None,
        description="Path of xmlsec1 (Debian package xmlsec1), which checks SAML signatures; unset: found on PATH.",
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
        default="/login",
        description="The login page /oidc/authorize sends people to when they must sign in; with the default, "
        "a browser without any session is asked Entente's email question at /oidc/authorize itself.",
    )
    oidc_logout_sender: bool = Field(
        default=True, description="Send queued back-channel logout tokens from `entente serve`."
    )
    bootstrap_admin_password: SecretStr | None = Field(
        default=None,
        description="Password of the console's local operator 'admin', created (scrypt-hashed) on first use when "
        "no such admin exists; later changes of this value do not change the stored hash.",
    )
    console_session_minutes: int = Field(
        default=480,
        ge=5,
        description="Lifetime of an admin console sign-in (rechecked against the database on every request).",
    )
    console_operator_partner: str | None = Field(
        default=None,
        description="Slug of the partner whose people granted role 'admin' in workspace 'entente-console' are "
        "console operators; other partners' admins see only their own partner.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="`entente serve` logs: one JSON object per line (ts, level, logger, msg, request_id, partner, "
        "…) or plain text.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged; DEBUG adds the access lines of /healthz, /readyz, /metrics."
    )
    metrics_enabled: bool = Field(
        default=True,
        description="Serve Prometheus metrics at /metrics (labels name partner and workspace slugs: keep the path "
        "off the public ingress).",
    )
    signals_sender: bool = Field(
        default=True, description="Push queued Shared Signals SETs (RFC 8935) from `entente serve`."
    )
    signals_poll_wait_seconds: float = Field(
        default=15.0,
        ge=0,
        le=60,
        description="Longest time an RFC 8936 poll with returnImmediately=false waits for a SET before answering.",
    )
    signals_min_verification_interval_seconds: int = Field(
        default=30, ge=0, description="SSF min_verification_interval: a sooner verification request answers 429."
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
