"""The arq Redis pool and the enqueue call; both processes use the same serializer."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
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
