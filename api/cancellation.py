"""After a cancel is committed: the worker running the conversation stops its model call."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
from loguru import logger
from redis.exceptions import RedisError

from shared.completion import announce_cancelled


async def announce(queue: ArqRedis, conversation_id: uuid.UUID) -> None:
    """Tell every worker (and every waiting client) that the conversation was cancelled.

    The cancel is already committed: if Redis cannot take the announcement, the running
    attempt's answer is still discarded when it is written, only the model is not stopped
    early."""
    try:
        await announce_cancelled(queue, queue.default_queue_name, conversation_id)
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning(
            "cancel_not_announced", conversation_id=str(conversation_id), error=type(exc).__name__
        )
