"""How the queue is doing, as seen from the API: for readiness details and metrics."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

from arq.connections import ArqRedis
from loguru import logger
from redis.exceptions import RedisError

from shared.db import SessionFactory
from shared.metrics import Metrics
from shared.queue import live_workers
from shared.repositories.conversations import ConversationRepository


@dataclass(frozen=True, slots=True)
class QueueStatus:
    depth: int | None
    workers_alive: int | None
    pending: int | None
    oldest_pending_age_seconds: float | None


async def sample_queue(
    queue: ArqRedis, session_factory: SessionFactory, queue_name: str
) -> QueueStatus:
    """Jobs in Redis, whether any worker heartbeat is fresh, and what PostgreSQL has pending.

    Each part is None when its store cannot be reached: a probe must not fail on it.
    """
    depth: int | None = None
    alive: int | None = None
    with suppress(RedisError, OSError):
        depth = int(await queue.zcard(queue_name))
        alive = await live_workers(queue, queue_name)
    pending: int | None = None
    age: float | None = None
    try:
        async with session_factory() as session:
            pending, age = await ConversationRepository(session).queue_stats()
    except Exception as exc:  # the probe reports the database itself; here it is "unknown"
        logger.debug("queue_sample_database_failed", error=type(exc).__name__)
    return QueueStatus(
        depth=depth, workers_alive=alive, pending=pending, oldest_pending_age_seconds=age
    )


def publish(status: QueueStatus, metrics: Metrics) -> None:
    if status.depth is not None:
        metrics.queue_depth.set(status.depth)
    if status.workers_alive is not None:
        metrics.workers_alive.set(status.workers_alive)
    if status.pending is not None:
        metrics.oldest_pending_age_seconds.set(status.oldest_pending_age_seconds or 0)
