"""Hand a committed conversation to the queue without ever losing it."""

from __future__ import annotations

from arq.connections import ArqRedis
from loguru import logger
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Conversation
from shared.queue import enqueue_generation


async def enqueue_after_commit(
    session: AsyncSession,
    queue: ArqRedis,
    conversation: Conversation,
    *,
    trace_context: dict[str, str] | None = None,
) -> None:
    """Commit first, then enqueue: a worker must find the row its job names.

    When Redis cannot take the job the row is still committed as `pending`, and the
    worker's sweeper queues it later, so the client's 202 stays true.
    """
    await session.commit()
    log = logger.bind(conversation_id=str(conversation.id))
    try:
        queued = await enqueue_generation(queue, conversation.id, trace_context=trace_context)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("enqueue_failed", error=type(exc).__name__)
        return
    log.info("conversation_enqueued" if queued else "conversation_already_queued")
