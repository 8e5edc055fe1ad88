"""The arq Redis pool and the enqueue call; both processes use the same serializer."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from redis.asyncio import ConnectionPool

from shared.jobs import (
    GENERATE_CONVERSATION,
    GenerationJob,
    deserialize_job,
    generation_job_id,
    serialize_job,
)
from shared.settings import Settings


def create_queue_pool(settings: Settings) -> ArqRedis:
    """A lazily connecting pool: the API starts, and accepts work, while Redis is down."""
    pool = ConnectionPool.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return ArqRedis(
        connection_pool=pool,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=settings.QUEUE_NAME,
    )


def heartbeat_key(queue_name: str, host: str, pid: int) -> str:
    """Where one worker process publishes its arq health check (its heartbeat)."""
    return f"{queue_name}:health-check:{host}:{pid}"


async def live_workers(pool: ArqRedis, queue_name: str, *, host: str | None = None) -> int:
    """Worker processes whose heartbeat has not expired, optionally on one host only."""
    pattern = f"{queue_name}:health-check:{host or '*'}:*"
    return len([key async for key in pool.scan_iter(match=pattern, count=500)])


async def enqueue_generation(
    pool: ArqRedis,
    conversation_id: uuid.UUID,
    *,
    trace_context: dict[str, str] | None = None,
    defer_seconds: float | None = None,
) -> bool:
    """Queue the generation of one conversation; False when its job is already queued."""
    job = GenerationJob(conversation_id=conversation_id, trace_context=trace_context or {})
    queued = await pool.enqueue_job(
        GENERATE_CONVERSATION,
        str(job.conversation_id),
        job.trace_context,
        _job_id=generation_job_id(conversation_id),
        _defer_by=defer_seconds,
    )
    return queued is not None


async def release_job(pool: ArqRedis, conversation_id: uuid.UUID) -> None:
    """Let the conversation's job run again now, though a dead worker had started it.

    arq marks a started job "in progress" for the longest function timeout + 10 s and runs
    nobody else's copy meanwhile, so the job of a SIGKILLed worker would sit idle long after
    its lease ran out. Call this only when the lease has expired: the job timeout is shorter
    than the lease, so no live attempt still owns the marker (and the claim in PostgreSQL
    would refuse a second one anyway).
    """
    await pool.delete(in_progress_key_prefix + generation_job_id(conversation_id))
