"""How the queue is doing, as seen from the API: for readiness details and metrics."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field

from arq.connections import ArqRedis
from loguru import logger
from redis.exceptions import RedisError

from shared.db import SessionFactory
from shared.metrics import Metrics
from shared.model_servers import ServerStatus, configured_servers, read_server_status
from shared.models import Priority
from shared.queue import live_workers, waiting_by_priority
from shared.repositories.conversations import ConversationRepository
from shared.repositories.pending_ages import oldest_pending_age_by_priority
from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class QueueStatus:
    depth: int | None
    workers_alive: int | None
    oldest_pending_age_seconds: float | None
    database_read: bool  # False: the age is unknown, not "nothing pending"
    # Per priority: generation jobs waiting in the queue (None: Redis unread) and the age of
    # the oldest pending conversation (absent: the database unread).
    waiting_by_priority: dict[str, int] | None = None
    oldest_by_priority: dict[str, float | None] = field(default_factory=dict)

    def details(self) -> dict[str, object]:
        """What the readiness probe shows."""
        return {
            "depth": self.depth,
            "workers_alive": self.workers_alive,
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
            "by_priority": {
                p.value: {
                    "waiting": None
                    if self.waiting_by_priority is None
                    else self.waiting_by_priority.get(p.value, 0),
                    "oldest_pending_age_seconds": self.oldest_by_priority.get(p.value),
                }
                for p in Priority
            },
        }


async def sample_queue(
    queue: ArqRedis, session_factory: SessionFactory, queue_name: str
) -> QueueStatus:
    """Jobs in Redis (`ZCARD`), live workers (`ZCOUNT` of the heartbeat registry) and how
    long the oldest pending conversation has waited (one index lookup): none of it costs more
    with a bigger backlog.

    Each part is None when its store cannot be reached: a probe must not fail on it.
    """
    depth: int | None = None
    alive: int | None = None
    waiting: dict[str, int] | None = None
    with suppress(RedisError, OSError):
        depth = int(await queue.zcard(queue_name))
        alive = await live_workers(queue, queue_name)
        waiting = await waiting_by_priority(queue, queue_name)
    age: float | None = None
    by_priority: dict[str, float | None] = {}
    known = False
    try:
        async with session_factory() as session:
            age = await ConversationRepository(session).oldest_pending_age()
            by_priority = await oldest_pending_age_by_priority(session)
        known = True
    except Exception as exc:  # the probe reports the database itself; here it is "unknown"
        logger.debug("queue_sample_database_failed", error=type(exc).__name__)
    return QueueStatus(
        depth=depth,
        workers_alive=alive,
        oldest_pending_age_seconds=age,
        database_read=known,
        waiting_by_priority=waiting,
        oldest_by_priority=by_priority,
    )


def publish(status: QueueStatus, metrics: Metrics) -> None:
    if status.depth is not None:
        metrics.queue_depth.set(status.depth)
    if status.workers_alive is not None:
        metrics.workers_alive.set(status.workers_alive)
    if status.database_read:
        metrics.oldest_pending_age_seconds.set(status.oldest_pending_age_seconds or 0)
        for priority, age in status.oldest_by_priority.items():
            metrics.oldest_pending_age_by_priority_seconds.labels(priority).set(age or 0)
    for priority, count in (status.waiting_by_priority or {}).items():
        metrics.queue_waiting_by_priority.labels(priority).set(count)


async def sample_servers(queue: ArqRedis, settings: Settings) -> list[ServerStatus] | None:
    """Every configured model server's capacity, slots held by all workers and health, as
    the workers keep them in Redis: one round trip, whatever the backlog. None when Redis
    cannot be reached (a probe must not fail on it); a server that is down is reported, not
    a failure."""
    try:
        return await read_server_status(queue, settings.QUEUE_NAME, configured_servers(settings))
    except (RedisError, OSError) as exc:
        logger.debug("model_servers_sample_failed", error=type(exc).__name__)
        return None


def publish_servers(servers: list[ServerStatus] | None, metrics: Metrics) -> None:
    for server in servers or []:
        labels = (server.provider, server.server)
        metrics.model_server_capacity.labels(*labels).set(server.capacity)
        metrics.model_server_healthy.labels(*labels).set(1 if server.healthy else 0)
        if server.in_flight is not None:
            metrics.model_server_slots_held.labels(*labels).set(server.in_flight)
