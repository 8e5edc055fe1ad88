"""Process settings, read from the environment (and `.env`) once and validated at start."""

from __future__ import annotations

import secrets
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from limits import RateLimitItem
from limits import parse as parse_limit
from pydantic import (
    AliasChoices,
    AnyHttpUrl,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from shared.webhooks import AllowedHosts, parse_allowed_hosts, secret_problem


class Environment(StrEnum):
    DEV = "DEV"
    HML = "HML"
    PRD = "PRD"


class LogFormat(StrEnum):
    JSON = "JSON"
    HUMAN = "HUMAN"


class Exposure(StrEnum):
    """Who may read an operational route (`/metrics`)."""

    PUBLIC = "public"
    ADMIN = "admin"
    OFF = "off"


# Values people leave in a config by mistake; an admin key containing one is refused.
_PLACEHOLDER_MARKERS = ("change", "placeholder", "example", "secret", "password", "xxxx", "todo")
ADMIN_KEY_MIN_LENGTH = 32


class Settings(BaseSettings):
    """Every setting of both processes; names match `.env.example`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=True,
        # Fields with a deprecated alias (LLM_TIMEOUT_SECONDS) are still set by their name.
        populate_by_name=True,
    )

    SERVICE_NAME: str = "ai-eng-api"
    ENVIRONMENT: Environment = Environment.DEV
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: LogFormat = LogFormat.JSON
    LOG_PROMPTS: bool = False

    # None: on in DEV and HML, off in PRD.
    OPENAPI_ENABLED: bool | None = None
    OPENAPI_JSON_PATH: str = "/openapi.json"
    SWAGGER_UI_ENABLED: bool = True
    SWAGGER_UI_PATH: str = "/docs"
    # None: public in DEV, admin-only elsewhere.
    METRICS_ACCESS: Exposure | None = None

    ADMIN_API_KEY: SecretStr | None = None
    PUBLIC_BASE_URL: AnyHttpUrl | None = None
    MAX_REQUEST_BODY_BYTES: Annotated[int, Field(ge=1024)] = 2 * 1024 * 1024
    MAX_HEADER_BYTES: Annotated[int, Field(ge=1024)] = 16 * 1024
    PROMPT_MAX_CHARS: Annotated[int, Field(ge=1, le=1_000_000)] = 100_000
    SYSTEM_INSTRUCTION_MAX_CHARS: Annotated[int, Field(ge=1, le=1_000_000)] = 100_000
    CONTEXT_MAX_CHARS: Annotated[int, Field(ge=1, le=1_000_000)] = 100_000
    MAX_TOKENS_LIMIT: Annotated[int, Field(ge=1, le=1_000_000)] = 8192
    SUBMIT_RATE_LIMIT: str = "120/minute"
    MAX_ACTIVE_CONVERSATIONS_PER_USER: Annotated[int, Field(ge=0)] = 100
    QUEUE_MAX_DEPTH: Annotated[int, Field(ge=0)] = 10_000
    # What one batch job costs its user's fair share, in interactive jobs: while both wait,
    # interactive work gets this many times the share of batch work (1: the same share).
    SCHEDULER_BATCH_COST: Annotated[int, Field(ge=1, le=1000)] = 4

    POSTGRES_HOSTNAME: str = "127.0.0.1"
    POSTGRES_USER: str = "postgres"
    POSTGRES_PASSWORD: str = ""
    POSTGRES_DB: str = "ai_eng_api"
    POSTGRES_PORT: Annotated[int, Field(ge=1, le=65535)] = 5432
    DATABASE_URL: str | None = None
    DB_POOL_SIZE: PositiveInt = 20
    DB_MAX_OVERFLOW: Annotated[int, Field(ge=0)] = 0
    DB_POOL_TIMEOUT_SECONDS: PositiveFloat = 5.0
    DB_STATEMENT_TIMEOUT_MS: Annotated[int, Field(ge=0)] = 30_000
    # A PgBouncer-style pooler in transaction mode between the service and PostgreSQL.
    DB_TRANSACTION_POOLER: bool = False

    # redis:// or rediss:// (TLS), with user:password for an ACL user, and the database.
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    # Sentinels to ask for the primary ("host:port,host:port"); empty: REDIS_URL's host is it.
    REDIS_SENTINELS: str = ""
    REDIS_SENTINEL_MASTER: str = "mymaster"
    REDIS_SENTINEL_PASSWORD: SecretStr | None = None
    QUEUE_NAME: str = "ai-eng-api:queue"

    OLLAMA_BASE_URL: AnyHttpUrl = AnyHttpUrl("http://localhost:11434")
    OLLAMA_DEFAULT_MODEL: str = "llama3.2:3b"
    # Bounds one generation call of any provider. OLLAMA_TIMEOUT_SECONDS, its old name, is still
    # read (deprecated) so existing `.env` files keep working.
    LLM_TIMEOUT_SECONDS: PositiveFloat = Field(
        default=120.0,
        validation_alias=AliasChoices("LLM_TIMEOUT_SECONDS", "OLLAMA_TIMEOUT_SECONDS"),
    )
    OLLAMA_STARTUP_CHECK_ENABLED: bool = True

    WORKER_MAX_JOBS: PositiveInt = 10
    WORKER_JOB_TIMEOUT_SECONDS: PositiveFloat = 180.0
    WORKER_LEASE_SECONDS: PositiveFloat = 240.0
    WORKER_POLL_DELAY_SECONDS: PositiveFloat = 0.5
    WORKER_MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=50)] = 5
    WORKER_RETRY_BASE_SECONDS: PositiveFloat = 2.0
    WORKER_RETRY_MAX_SECONDS: PositiveFloat = 60.0
    WORKER_SHUTDOWN_GRACE_SECONDS: Annotated[int, Field(ge=0)] = 30
    WORKER_HEALTH_CHECK_INTERVAL_SECONDS: Annotated[int, Field(ge=1)] = 10
    WORKER_SWEEP_INTERVAL_SECONDS: Annotated[int, Field(ge=1, le=60)] = 15
    WORKER_SWEEP_PENDING_GRACE_SECONDS: PositiveFloat = 30.0
    # Loopback unless the deployment says otherwise (a container sets 0.0.0.0 to be scraped).
    WORKER_METRICS_HOST: str = "127.0.0.1"
    WORKER_METRICS_PORT: Annotated[int, Field(ge=0, le=65535)] = 9100

    # The live text of a generation (docs/streaming.md): the worker publishes it to a Redis
    # stream per conversation, every EVENTS_FLUSH_INTERVAL_MS at most; GET .../events reads it.
    EVENTS_PUBLISH_ENABLED: bool = True
    EVENTS_FLUSH_INTERVAL_MS: Annotated[int, Field(ge=0, le=5000)] = 50
    EVENTS_MAX_LEN: Annotated[int, Field(ge=100)] = 10_000
    EVENTS_RETENTION_SECONDS: Annotated[int, Field(ge=1)] = 300
    EVENTS_KEEPALIVE_SECONDS: PositiveFloat = 15.0

    # Signed webhooks (docs/webhooks.md): the Standard Webhooks secret ("whsec_<base64>"),
    # required once a submission names a callback_url; where callbacks may go; how hard to try.
    WEBHOOK_SECRET: SecretStr | None = None
    WEBHOOK_ALLOWED_HOSTS: str = ""
    WEBHOOK_MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=50)] = 8
    WEBHOOK_TIMEOUT_SECONDS: PositiveFloat = 10.0
    WEBHOOK_RETRY_BASE_SECONDS: PositiveFloat = 5.0
    WEBHOOK_RETRY_MAX_SECONDS: PositiveFloat = 600.0

    OPENAI_BASE_URL: AnyHttpUrl | None = None
    OPENAI_API_KEY: SecretStr | None = None

    # More servers of a provider, beside its base URL: "url[=capacity],url[=capacity]".
    OLLAMA_SERVERS: str = ""
    OPENAI_SERVERS: str = ""
    # Requests one model server takes at once, across every worker (0: no limit); a server
    # in *_SERVERS may set its own with `=N`.
    LLM_SERVER_CAPACITY: Annotated[int, Field(ge=0)] = 0

    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None
    OTEL_TRACES_FILE: str | None = None
    # An API request's client spans (SQL, Redis, HTTP) are exported when it failed or took at
    # least this long (0: always); its server span and its own spans always are.
    TRACE_DETAIL_MIN_MS: Annotated[int, Field(ge=0)] = 250
    # A GET or HEAD that ends under TRACE_DETAIL_MIN_MS with a 2xx/3xx is not traced at all
    # (true: every request is); a caller's sampled traceparent is always continued.
    TRACE_FAST_READS: bool = False

    @model_validator(mode="after")
    def _timeouts_nest(self) -> Settings:
        problem = timeouts_problem(
            self.LLM_TIMEOUT_SECONDS, self.WORKER_JOB_TIMEOUT_SECONDS, self.WORKER_LEASE_SECONDS
        )
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _admin_key_is_real(self) -> Settings:
        key = None if self.ADMIN_API_KEY is None else self.ADMIN_API_KEY.get_secret_value()
        problem = admin_key_setting_problem(key, self.ENVIRONMENT)
        if problem is not None:
            raise ValueError(problem)
        return self

    @field_validator("REDIS_SENTINELS")
    @classmethod
    def _sentinels_parse(cls, value: str) -> str:
        parse_host_ports(value)
        return value

    @property
    def redis_sentinels(self) -> list[tuple[str, int]]:
        return parse_host_ports(self.REDIS_SENTINELS)

    @field_validator("OLLAMA_SERVERS", "OPENAI_SERVERS")
    @classmethod
    def _servers_parse(cls, value: str) -> str:
        parse_servers(value)
        return value

    def model_servers(self, provider: str) -> list[tuple[str, int]]:
        """(base URL, capacity) of every server of `provider`, its base URL first; empty when
        the provider is not configured."""
        if provider == "ollama":
            base, extra = self.ollama_base_url, self.OLLAMA_SERVERS
        elif provider == "openai" and self.OPENAI_BASE_URL is not None:
            base, extra = str(self.OPENAI_BASE_URL).rstrip("/"), self.OPENAI_SERVERS
        else:
            return []
        servers = [(base, self.LLM_SERVER_CAPACITY)]
        for url, capacity in parse_servers(extra):
            if url not in (known for known, _ in servers):
                servers.append((url, self.LLM_SERVER_CAPACITY if capacity is None else capacity))
        return servers

    @field_validator("WEBHOOK_SECRET")
    @classmethod
    def _webhook_secret_format(cls, value: SecretStr | None) -> SecretStr | None:
        problem = None if value is None else secret_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("WEBHOOK_ALLOWED_HOSTS")
    @classmethod
    def _webhook_hosts_parse(cls, value: str) -> str:
        parse_allowed_hosts(value)
        return value

    @property
    def webhook_allowed_hosts(self) -> AllowedHosts:
        return parse_allowed_hosts(self.WEBHOOK_ALLOWED_HOSTS)

    @field_validator("SUBMIT_RATE_LIMIT")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @property
    def openapi_enabled(self) -> bool:
        if self.OPENAPI_ENABLED is not None:
            return self.OPENAPI_ENABLED
        return self.ENVIRONMENT != Environment.PRD

    @property
    def metrics_access(self) -> Exposure:
        if self.METRICS_ACCESS is not None:
            return self.METRICS_ACCESS
        return Exposure.PUBLIC if self.ENVIRONMENT == Environment.DEV else Exposure.ADMIN

    @property
    def database_url(self) -> URL:
        """The asyncpg URL: `DATABASE_URL` when given, else built from the `POSTGRES_*` parts."""
        if self.DATABASE_URL:
            url = make_url(self.DATABASE_URL)
            if url.drivername in {"postgresql", "postgres"}:
                url = url.set(drivername="postgresql+asyncpg")
            return url
        return URL.create(
            "postgresql+asyncpg",
            username=self.POSTGRES_USER,
            password=self.POSTGRES_PASSWORD or None,
            host=self.POSTGRES_HOSTNAME,
            port=self.POSTGRES_PORT,
            database=self.POSTGRES_DB,
        )

    @property
    def ollama_base_url(self) -> str:
        return str(self.OLLAMA_BASE_URL).rstrip("/")


# The checks behind the validators are plain functions: what they decide is tested, and
# mutation-tested, without building a whole Settings.


def timeouts_problem(llm_call: float, job: float, lease: float) -> str | None:
    """Why the timeouts do not nest as LLM call < job < lease, or None.

    A lease must outlive the job, and the job must outlive one LLM call, or a slow but
    healthy generation would be taken back and generated twice.
    """
    if not llm_call < job:
        return "LLM_TIMEOUT_SECONDS must be smaller than WORKER_JOB_TIMEOUT_SECONDS"
    if not job < lease:
        return "WORKER_JOB_TIMEOUT_SECONDS must be smaller than WORKER_LEASE_SECONDS"
    return None


def admin_key_setting_problem(key: str | None, environment: Environment) -> str | None:
    """Why `ADMIN_API_KEY` is not acceptable in `environment`, or None."""
    if key is None:
        if environment != Environment.DEV:
            return (
                "ADMIN_API_KEY is required outside ENVIRONMENT=DEV (make one with: "
                "python -c 'import secrets; print(\"aek_admin_\" + secrets.token_urlsafe(32))')"
            )
        return None
    problem = admin_key_problem(key)
    return None if problem is None else f"ADMIN_API_KEY {problem}"


def admin_key_problem(key: str) -> str | None:
    """Why `key` is no admin key to accept (too short, too uniform, a placeholder), or None."""
    if len(key) < ADMIN_KEY_MIN_LENGTH or len(set(key)) < 8:
        return f"must be at least {ADMIN_KEY_MIN_LENGTH} random characters"
    if any(marker in key.lower() for marker in _PLACEHOLDER_MARKERS):
        return "looks like a placeholder; generate a random one"
    return None


def generate_admin_key() -> str:
    """A fresh admin key that passes the checks above (a random one almost always does)."""
    while True:
        key = "aek_admin_" + secrets.token_urlsafe(32)
        if admin_key_problem(key) is None:
            return key


def parse_servers(value: str) -> list[tuple[str, int | None]]:
    """`url[=capacity],...` (blanks ignored) as (URL without a trailing slash, capacity or
    None); a malformed entry is a ValueError."""
    found: list[tuple[str, int | None]] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        url, sep, capacity = entry.partition("=")
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or len(url.split("//", 1)[1]) == 0:
            raise ValueError(f"expected an http(s) URL, got {entry!r}")
        if sep and not capacity.strip().isdigit():
            raise ValueError(f"expected url=<capacity>, got {entry!r}")
        found.append((url, int(capacity) if sep else None))
    return found


def parse_host_ports(value: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (blanks ignored) as pairs; a malformed entry is a ValueError."""
    found = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {entry!r}")
        found.append((host, int(port)))
    return found


def parse_rate_limit(value: str) -> RateLimitItem | None:
    """`"120/minute"`, `"10 per 5 seconds"` (the `limits` notation); `"off"` → None."""
    if value.strip().lower() in {"off", "none", ""}:
        return None
    try:
        return parse_limit(value)
    except ValueError:
        raise ValueError(f"rate limit {value!r} is not like '120/minute' or 'off'") from None


class SettingsError(RuntimeError):
    """Raised with a readable message naming each bad variable."""


def load_settings() -> Settings:
    """Read and validate settings, turning pydantic's report into one readable message."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded on first use."""
    return load_settings()
