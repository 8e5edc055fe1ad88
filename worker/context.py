"""What a worker makes once at start and every job borrows: engine, HTTP and LLM clients, the
event streams' Redis client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from loguru import logger
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import SessionFactory, create_engine, create_session_factory
from shared.llm.base import LLMClient, LLMError
from shared.llm.ollama import OllamaClient, check_ollama_ready
from shared.llm.registry import (
    SUPPORTED_PROVIDERS,
    create_http_client,
    make_llm_client,
)
from shared.models.model_version import ModelVersion
from shared.redis_connection import connection_pool
from shared.settings import Settings
from shared.stream_events import EventStreamWriter
from shared.telemetry import instrument_httpx, instrument_sqlalchemy
from worker.cancellation import RunningGenerations
from worker.model_servers import ModelServers
from worker.observability import Observability

PROCESS_NAME = "worker"
RESOURCES_KEY = "resources"
SLOT_MARGIN_SECONDS = 10.0


@dataclass(slots=True)
class WorkerResources:
    settings: Settings
    engine: AsyncEngine
    session_factory: SessionFactory
    http: httpx.AsyncClient
    # Every model server of every provider, and their shared slots (worker/model_servers.py).
    servers: ModelServers
    obs: Observability
    # The conversations' event streams; a client of its own, so a slow append never holds up
    # arq's connections. None writes nothing at all (tests and the benchmark's baseline).
    events_redis: Redis
    events: EventStreamWriter | None
    # The model calls this process runs, so a client's cancel can stop one.
    running: RunningGenerations = field(default_factory=RunningGenerations)

    @property
    def llm_clients(self) -> Mapping[str, LLMClient]:
        """The client of each provider's first server (its base URL)."""
        return {p: servers[0].client for p, servers in self.servers.by_provider.items() if servers}

    async def close(self) -> None:
        await self.http.aclose()
        await self.events_redis.aclose(close_connection_pool=True)
        await self.servers.redis.aclose(close_connection_pool=True)
        await self.engine.dispose()


def resources(ctx: Mapping[str, Any]) -> WorkerResources:
    """The typed view of arq's job context."""
    return cast(WorkerResources, ctx[RESOURCES_KEY])


async def open_resources(settings: Settings, obs: Observability) -> WorkerResources:
    engine = create_engine(settings, process_name=PROCESS_NAME)
    http = create_http_client(settings, process_name=PROCESS_NAME)
    tracer_provider = obs.telemetry.tracer_provider
    instrument_sqlalchemy(engine, tracer_provider)
    instrument_httpx(http, tracer_provider)
    # Short timeouts: publishing gives up rather than wait (worker/delta_publisher.py).
    events_redis = Redis(
        connection_pool=connection_pool(
            settings, socket_connect_timeout=1, socket_timeout=1, retry_on_timeout=False
        )
    )
    events = EventStreamWriter(
        events_redis,
        queue_name=settings.QUEUE_NAME,
        max_len=settings.EVENTS_MAX_LEN,
        retention_seconds=settings.EVENTS_RETENTION_SECONDS,
    )
    return WorkerResources(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        http=http,
        servers=_model_servers(settings, http, obs),
        obs=obs,
        events_redis=events_redis,
        events=events,
    )


def _model_servers(settings: Settings, http: httpx.AsyncClient, obs: Observability) -> ModelServers:
    # A slot is held for the longest a call may take, plus a margin: a worker killed
    # mid-call gives its slot back then.
    redis = Redis(
        connection_pool=connection_pool(settings, socket_connect_timeout=2, socket_timeout=5)
    )
    lease = settings.LLM_TIMEOUT_SECONDS + SLOT_MARGIN_SECONDS
    servers = ModelServers(redis, lease_seconds=lease, metrics=obs.metrics)
    for provider in sorted(SUPPORTED_PROVIDERS):
        for url, capacity in settings.model_servers(provider):
            client = make_llm_client(settings, http, provider, url)
            servers.add(provider, url, capacity, client, settings.QUEUE_NAME)
    return servers


async def check_llm(res: WorkerResources) -> None:
    """Say at start when Ollama is down or lacks the default model, if anything needs it.

    Only an active model version of provider `ollama` sends a conversation there: with none
    (`make run LLM=local`, an OpenAI-compatible server) there is nothing to check. The worker
    keeps running either way: jobs retry until Ollama is back, which beats a crash loop while
    Ollama is still starting next to it.
    """
    client = res.llm_clients.get("ollama")
    if not res.settings.OLLAMA_STARTUP_CHECK_ENABLED or not isinstance(client, OllamaClient):
        return
    versions = await _ollama_model_versions(res.session_factory)
    if versions == 0:
        logger.debug("ollama_check_skipped", reason="no active model version uses ollama")
        return
    try:
        await check_ollama_ready(client, res.settings.OLLAMA_DEFAULT_MODEL)
    except LLMError as exc:
        logger.warning(
            "ollama_not_ready",
            reason=exc.message,
            model_versions=versions,
            hint="conversations on its model versions retry until it answers: start Ollama "
            "(`make llm_up`) or fix OLLAMA_BASE_URL",
        )
    else:
        logger.info("ollama_ready", model=res.settings.OLLAMA_DEFAULT_MODEL)


async def _ollama_model_versions(session_factory: SessionFactory) -> int | None:
    """How many active model versions use Ollama; None when the database cannot say."""
    query = (
        select(func.count())
        .select_from(ModelVersion)
        .where(ModelVersion.provider == "ollama", ModelVersion.is_active)
    )
    try:
        async with session_factory() as session:
            return int((await session.execute(query)).scalar_one())
    except (SQLAlchemyError, OSError) as exc:
        logger.debug("ollama_check_count_failed", error=type(exc).__name__)
        return None
