"""Settings: environment (``BEM_`` prefix), ``.env`` and a secrets directory, validated at start.

Precedence, highest first: init arguments, environment, ``.env``, files in the secrets
directory (``BEM_SECRETS_DIR``, default ``/run/secrets``; one file per field, e.g.
``bem_secret_key``), defaults.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from croniter import croniter
from limits import parse as parse_limit
from pydantic import Field, IPvAnyNetwork, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Named per-route limits; routes declare which rule they use (``rate_limit("auth")``).
RATE_LIMIT_RULES = {
    "auth": "10/minute",  # sign-in, refresh, logout: per client IP
    "upload": "60/hour",  # version uploads and imports, per user (whatever token they use)
    "export": "120/hour",  # takeoff files (CSV, XLSX), per user; JSON takeoffs are reads
}
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the refused default
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/bem.db"


class MailBackend(StrEnum):
    console = "console"
    file = "file"
    smtp = "smtp"


class SmtpSecurity(StrEnum):
    starttls = "starttls"
    ssl = "ssl"
    none = "none"


class Signup(StrEnum):
    open = "open"
    invite = "invite"


class JobQueueKind(StrEnum):
    local = "local"  # in-process runner (embedded default)
    redis = "redis"  # arq on BEM_REDIS_URL, consumed by `bem worker`


class Profile(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BEM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    profile: Profile = Profile.development
    secret_key: SecretStr = Field(default=SecretStr(DEV_SECRET_KEY), min_length=16)
    # Secret keys secret_key replaced (JSON list): what they sealed still opens, and
    # ``bem rotate-secret-key`` seals it again with secret_key (docs/runbooks/rotating-secrets.md)
    secret_key_previous: list[SecretStr] = []

    # Database: SQLite file (embedded default) or PostgreSQL. URLs may carry passwords.
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_max_overflow: Annotated[int, Field(ge=0, le=200)] = 5
    db_pool_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    db_pool_recycle: Annotated[int, Field(ge=60)] = 1800
    db_connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    db_statement_timeout_ms: Annotated[int, Field(ge=0)] = 30_000
    db_pgbouncer: bool = False  # transaction pooling: disable server-side prepared statements
    # Read replicas of PostgreSQL, comma-separated URLs: a ready version's data is read there
    # (kit/replicas.py); writes, auth, the feed and everything else stay on the primary.
    database_read_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    redis_key_prefix: str = Field(default="bem", pattern=r"^[A-Za-z0-9_:-]{1,64}$")

    # HTTP server
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    shutdown_timeout: Annotated[float, Field(gt=0, le=600)] = 30.0

    # Logging
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_json: bool = True

    # Identity: sessions (JWT access + rotating refresh tokens) and email OTP login
    jwt_keys: dict[str, SecretStr] = {}  # kid -> HMAC key; empty: derived from secret_key
    jwt_active_kid: str | None = None  # signs new tokens; default: the last key of jwt_keys
    jwt_issuer: str = "bem"
    jwt_audience: str = "bem-api"
    access_token_ttl_s: Annotated[int, Field(ge=60, le=86_400)] = 900
    # How long a process remembers a verified credential, and a ready version with the
    # caller's role (kit/memo.py); 0: never
    auth_memo_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    refresh_token_ttl_s: Annotated[int, Field(ge=3600)] = 30 * 86_400
    signup: Signup = Signup.invite
    otp_ttl_s: Annotated[int, Field(ge=60, le=3600)] = 600
    otp_max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    otp_digits: Annotated[int, Field(ge=6, le=10)] = 6
    otp_requests_per_email: Annotated[int, Field(ge=1)] = 5  # per address and client, per window
    otp_requests_per_email_total: Annotated[int, Field(ge=1)] = 50  # per address, all clients
    otp_requests_per_ip: Annotated[int, Field(ge=1)] = 20
    otp_request_window_s: Annotated[int, Field(ge=60)] = 900
    totp_issuer: str = "BEM"

    # Mail
    mail_backend: MailBackend = MailBackend.console
    mail_from: str = "BEM <bem@localhost>"
    mail_file_dir: Path = Path("var/mail")
    smtp_host: str = "localhost"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    smtp_security: SmtpSecurity = SmtpSecurity.starttls
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    # Rate limiting (see kit/ratelimit.py): per caller identity, Redis-shared when configured
    rate_limit_enabled: bool = True
    rate_limit_default: str = "600/minute"
    rate_limit_ip_ceiling: str = "1200/minute"
    # Uncached takeoffs and diffs computing at once per process (kit/bulkhead.py), and how
    # long one waits for its turn before it is 503 busy.
    heavy_queries: Annotated[int, Field(ge=1, le=100)] = 4
    heavy_query_wait_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    rate_limit_rules: dict[str, str] = {}  # merged over RATE_LIMIT_RULES
    max_concurrent_uploads: Annotated[int, Field(ge=1, le=100)] = 2
    max_concurrent_exports: Annotated[int, Field(ge=1, le=100)] = 2
    trusted_proxies: list[IPvAnyNetwork] = []  # whose X-Forwarded-For is believed

    # Read cache for answers computed from versions (kit/cache.py): Redis when configured
    cache_enabled: bool = True
    cache_ttl_s: Annotated[int, Field(ge=1, le=30 * 86_400)] = 3600
    cache_memory_bytes: Annotated[int, Field(ge=0)] = 64 * 1024 * 1024  # without Redis

    # Request hygiene
    max_request_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024  # JSON bodies
    cors_origins: list[str] = []  # e.g. ["https://viewer.example.com"]; never "*" or "null"
    hsts: bool = True  # Strict-Transport-Security on responses served over https

    # The commit this build came from (the image build sets it); labels bem_build_info,
    # /health and error reports. Unset or empty: the checkout's HEAD, or "unknown".
    build_commit: str | None = Field(default=None, pattern=r"^([0-9a-f]{7,40})?$")

    # Tracing (OpenTelemetry), off by default
    tracing_enabled: bool = False
    otlp_endpoint: str | None = None  # e.g. http://otel-collector:4318/v1/traces
    tracing_sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0

    # Error tracking (Sentry-compatible); off when unset
    sentry_dsn: SecretStr | None = None

    # /metrics: open by default (bind to an internal network), or restricted
    metrics_token: SecretStr | None = None  # if set, /metrics needs "Bearer <token>"
    metrics_networks: list[IPvAnyNetwork] = []  # if set, only these client addresses

    # Uploads of element documents
    max_json_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    max_ndjson_body_bytes: Annotated[int, Field(ge=1024)] = 2 * 1024 * 1024 * 1024
    max_line_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    upload_batch_size: Annotated[int, Field(ge=1, le=50_000)] = 2000

    # File imports (IFC, IFCZIP, DXF, NDJSON, JSON) as background jobs
    storage_dir: Path = Path("var/sources")  # original files, without storage_url
    # s3://bucket/prefix: original files in an S3-compatible store (kit/s3.py); endpoint and
    # credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
    storage_url: Annotated[
        str | None,
        Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/-]*)?$"),
    ] = None
    backup_dir: Path = Path("var/backups")  # bem backup writes here (stages off-site ones)
    # s3://bucket/prefix: backups leave the host, sealed with backup_key (ops/offsite.py)
    backup_url: Annotated[
        str | None,
        Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/-]*)?$"),
    ] = None
    # age identities (bem backup-key): the first seals off-site backups, any opens them
    backup_key: SecretStr | None = None
    # Retention where backups go: the newest backup_keep, plus the newest of each of the
    # latest backup_keep_daily days and backup_keep_weekly ISO weeks
    backup_keep: Annotated[int, Field(ge=1, le=1000)] = 7
    backup_keep_daily: Annotated[int, Field(ge=0, le=1000)] = 0
    backup_keep_weekly: Annotated[int, Field(ge=0, le=1000)] = 0
    # Scheduled backups: a cron expression in UTC (e.g. "0 2 * * *"), run by bem worker or
    # the embedded job process (ops/runner.py), which also runs POST /v1/admin/backups.
    backup_schedule: str | None = None
    backup_poll_s: Annotated[float, Field(ge=0.1, le=3600)] = 10.0  # how soon a request starts
    backup_timeout_s: Annotated[int, Field(ge=60)] = 6 * 3600  # running longer: abandoned
    job_queue: JobQueueKind = JobQueueKind.local
    job_max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    job_timeout_s: Annotated[int, Field(ge=5, le=86_400)] = 1800
    worker_concurrency: Annotated[int, Field(ge=1, le=64)] = 2  # jobs per bem worker
    local_job_concurrency: Annotated[int, Field(ge=1, le=16)] = 1  # jobs per API process
    # Every so often the job runner (bem worker, or the embedded one) re-queues jobs nobody
    # works on: queued this long ago without running, or running with no sign of life.
    job_sweep_s: Annotated[float, Field(ge=0.2, le=3600)] = 30.0
    # bem worker serves its Prometheus metrics on BEM_HOST at this port; unset: not served
    worker_metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    max_import_bytes: Annotated[int, Field(ge=1024)] = 2 * 1024 * 1024 * 1024
    max_import_elements: Annotated[int, Field(ge=1)] = 2_000_000
    # Bounding box (and volume/area without quantity sets) from IFC geometry: slow, so off.
    import_geometry: bool = False
    # After each IFC import, a job makes the version's 3D geometry (GLB) for the viewer;
    # IfcOpenShell's geometry iterator uses this many threads in it.
    geometry: bool = True
    geometry_threads: Annotated[int, Field(ge=1, le=64)] = 1
    dxf_layer_map: dict[str, str] = {}  # layer glob -> IFC class, e.g. {"A-WALL*": "IfcWall"}
    dxf_default_class: str = Field(default="IfcBuildingElementProxy", pattern=r"^Ifc[A-Za-z]+$")

    # Change feed (live/): every process polls the event outbox once per feed_poll_s
    feed_poll_s: Annotated[float, Field(ge=0.05, le=10)] = 0.5
    feed_heartbeat_s: Annotated[float, Field(ge=0.1, le=300)] = 25.0  # keep-alive; re-authorizes
    feed_max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1000  # per process

    # Webhooks: sent by bem worker (or the embedded process), retried with backoff
    webhook_timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    webhook_max_attempts: Annotated[int, Field(ge=1, le=20)] = 8
    webhook_retry_base_s: Annotated[float, Field(gt=0, le=3600)] = 10.0  # x3 per attempt
    webhooks_per_project: Annotated[int, Field(ge=1, le=1000)] = 20
    webhook_concurrency: Annotated[int, Field(ge=1, le=1000)] = 16  # sends at once, per sender
    webhook_per_destination: Annotated[int, Field(ge=1, le=100)] = 2  # ... per receiver host
    # Receivers on loopback, private or link-local addresses are refused unless allowed
    # (a webhook must not become a way to reach the server's internal network).
    webhook_allow_private: bool = False

    @model_validator(mode="after")
    def _production_rules(self) -> Self:
        if self.profile is Profile.production:
            secret = self.secret_key.get_secret_value()
            if secret == DEV_SECRET_KEY or len(secret) < 32:
                raise ValueError(
                    "secret_key: production refuses the default or a short secret "
                    "(set BEM_SECRET_KEY or the bem_secret_key secrets file, >= 32 chars)"
                )
            if self.mail_backend is not MailBackend.smtp:
                raise ValueError(
                    "mail_backend: production sends sign-in codes by SMTP only "
                    "(console and file backends would expose them)"
                )
        return self

    @model_validator(mode="after")
    def _rate_limits(self) -> Self:
        self.rate_limit_rules = {**RATE_LIMIT_RULES, **self.rate_limit_rules}
        named = {
            "rate_limit_default": self.rate_limit_default,
            "rate_limit_ip_ceiling": self.rate_limit_ip_ceiling,
            **{f"rate_limit_rules.{k}": v for k, v in self.rate_limit_rules.items()},
        }
        for field, value in named.items():
            try:
                parse_limit(value)
            except ValueError as exc:
                raise ValueError(f"{field}: {value!r} is not a rate like '10/minute'") from exc
        return self

    @model_validator(mode="after")
    def _jobs(self) -> Self:
        if self.job_queue is JobQueueKind.redis and self.redis_url is None:
            raise ValueError("job_queue: 'redis' needs BEM_REDIS_URL")
        for pattern, ifc_class in self.dxf_layer_map.items():
            if not re.fullmatch(r"Ifc[A-Za-z]+", ifc_class):
                raise ValueError(
                    f"dxf_layer_map: {pattern!r} maps to {ifc_class!r}, not an IFC class"
                )
        return self

    @model_validator(mode="after")
    def _backups(self) -> Self:
        if self.backup_url is not None and self.backup_key is None:
            raise ValueError("backup_url: off-site backups are encrypted; set BEM_BACKUP_KEY")
        if self.backup_schedule is not None and not croniter.is_valid(self.backup_schedule):
            raise ValueError(
                f"backup_schedule: {self.backup_schedule!r} is not a cron expression "
                "(five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *')"
            )
        return self

    @model_validator(mode="after")
    def _replicas(self) -> Self:
        urls = [self.database_url_value, *self.read_urls]
        if self.read_urls and not all(u.startswith("postgres") for u in urls):
            raise ValueError(
                "database_read_url: read replicas are PostgreSQL streaming replicas of a "
                "PostgreSQL BEM_DATABASE_URL"
            )
        return self

    @model_validator(mode="after")
    def _cors(self) -> Self:
        for origin in self.cors_origins:
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
                raise ValueError(
                    f"cors_origins: {origin!r} is not an origin like https://app.example.com "
                    "(wildcards and 'null' are refused)"
                )
        return self

    @model_validator(mode="after")
    def _jwt_kid(self) -> Self:
        if self.jwt_active_kid is not None and self.jwt_active_kid not in self.jwt_keys:
            raise ValueError("jwt_active_kid: must name a key of jwt_keys")
        for kid, key in self.jwt_keys.items():
            if len(key.get_secret_value()) < 32:
                raise ValueError(f"jwt_keys: key {kid!r} is shorter than 32 characters")
        return self

    @property
    def database_url_value(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def secret_keys(self) -> list[str]:
        """The secret key first, then the ones it replaced."""
        return [k.get_secret_value() for k in (self.secret_key, *self.secret_key_previous)]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url_value.startswith("sqlite")

    @property
    def read_urls(self) -> list[str]:
        if self.database_read_url is None:
            return []
        return [
            u.strip() for u in self.database_read_url.get_secret_value().split(",") if u.strip()
        ]


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment; raises ``pydantic.ValidationError`` when invalid."""
    secrets_dir = Path(os.environ.get("BEM_SECRETS_DIR", "/run/secrets"))
    kwargs: dict[str, Any] = dict(overrides)
    if secrets_dir.is_dir():
        kwargs["_secrets_dir"] = secrets_dir
    return Settings(**kwargs)


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per invalid field, naming the ``BEM_`` variable, never echoing the value."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        name = f"BEM_{field.upper()}" if err["loc"] else field
        lines.append(f"{name}: {err['msg']}")
    return lines
