"""A conversation's end, announced: the worker publishes it, every API replica hears it.

After a worker has written a terminal outcome (completed or failed) it publishes the
conversation's id on `<QUEUE_NAME>:finished`. Each API process holds one subscription to that
channel (`api/finished_listener.py`), so any number of long-polls wait without querying the
database. The announcement is a wake-up, not the truth: a waiter reads the row when it wakes,
and a lost announcement only makes it wait until its own timeout.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis


def cancel_channel(queue_name: str) -> str:
    """The channel that carries the ids of conversations a client cancelled: the worker running
    one stops its model call (`worker.cancellation`)."""
    return f"{queue_name}:cancel"


async def announce_cancelled(redis: Redis, queue_name: str, conversation_id: uuid.UUID) -> None:
    """After the cancel is committed: stop the generation wherever it runs, and wake whoever
    waits for the conversation to end."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.publish(cancel_channel(queue_name), str(conversation_id))
        pipe.publish(finished_channel(queue_name), str(conversation_id))
        await pipe.execute()


def finished_channel(queue_name: str) -> str:
    """The channel that carries the ids of conversations that just ended."""
    return f"{queue_name}:finished"


async def announce_finished(redis: Redis, queue_name: str, conversation_id: uuid.UUID) -> None:
    await redis.publish(finished_channel(queue_name), str(conversation_id))
