"""Process settings, read from the environment (and `.env`) once and validated at start."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from pydantic import (
    AnyHttpUrl,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url


class Environment(StrEnum):
    DEV = "DEV"
    HML = "HML"
    PRD = "PRD"


class LogFormat(StrEnum):
    JSON = "JSON"
    HUMAN = "HUMAN"


class Settings(BaseSettings):
    """Every setting of both processes; names match `.env.example`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=True,
    )

    SERVICE_NAME: str = "ai-eng-api"
    ENVIRONMENT: Environment = Environment.DEV
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: LogFormat = LogFormat.JSON
    LOG_PROMPTS: bool = False

    OPENAPI_ENABLED: bool = True
    OPENAPI_JSON_PATH: str = "/openapi.json"
    SWAGGER_UI_ENABLED: bool = True
    SWAGGER_UI_PATH: str = "/docs"

    POSTGRES_HOSTNAME: str = "127.0.0.1"
    POSTGRES_USER: str = "postgres"
    POSTGRES_PASSWORD: str = ""
    POSTGRES_DB: str = "ai_eng_api"
    POSTGRES_PORT: Annotated[int, Field(ge=1, le=65535)] = 5432
    DATABASE_URL: str | None = None
    DB_POOL_SIZE: PositiveInt = 10
    DB_MAX_OVERFLOW: Annotated[int, Field(ge=0)] = 10
    DB_POOL_TIMEOUT_SECONDS: PositiveFloat = 5.0
    DB_STATEMENT_TIMEOUT_MS: Annotated[int, Field(ge=0)] = 30_000

    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    QUEUE_NAME: str = "ai-eng-api:queue"

    OLLAMA_BASE_URL: AnyHttpUrl = AnyHttpUrl("http://localhost:11434")
    OLLAMA_DEFAULT_MODEL: str = "llama3.2:3b"
    OLLAMA_TIMEOUT_SECONDS: PositiveFloat = 120.0
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
    WORKER_METRICS_HOST: str = "0.0.0.0"  # noqa: S104 - scraped from other hosts
    WORKER_METRICS_PORT: Annotated[int, Field(ge=0, le=65535)] = 9100

    OPENAI_BASE_URL: AnyHttpUrl | None = None
    OPENAI_API_KEY: SecretStr | None = None

    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None
    OTEL_TRACES_FILE: str | None = None

    @model_validator(mode="after")
    def _timeouts_nest(self) -> Settings:
        # A lease must outlive the job, and the job must outlive one LLM call, or a slow but
        # healthy generation would be taken back and generated twice.
        if not self.OLLAMA_TIMEOUT_SECONDS < self.WORKER_JOB_TIMEOUT_SECONDS:
            raise ValueError(
                "OLLAMA_TIMEOUT_SECONDS must be smaller than WORKER_JOB_TIMEOUT_SECONDS"
            )
        if not self.WORKER_JOB_TIMEOUT_SECONDS < self.WORKER_LEASE_SECONDS:
            raise ValueError("WORKER_JOB_TIMEOUT_SECONDS must be smaller than WORKER_LEASE_SECONDS")
        return self

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
