"""Long-polls (`GET /conversations/{id}?wait=N`): waiting for conversations to end without a
query while waiting, through one Redis subscription per API process to the channel workers
announce endings on (`shared/completion.py`).

A long-poll registers before it reads the row (`watch`), so an ending announced between its
read and its wait is not missed; it then waits on its own event, and reads the row once more
when woken or when its time is up. The subscription reconnects by itself after a Redis
outage; meanwhile waits only run to their timeout.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress

from fastapi import FastAPI, Request
from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.completion import finished_channel
from shared.models import ConversationStatus
from shared.redis_connection import connection_pool
from shared.repositories.conversation_statements import Row
from shared.services import conversations as service
from shared.settings import Settings

RECONNECT_MAX_SECONDS = 5.0
WAIT_DOC = "Seconds to wait for the conversation to end (1-60); 0 answers at once"
MAX_WAIT_SECONDS = 60
_PREFER_WAIT = re.compile(r"(?:^|[,;])\s*wait\s*=\s*\"?(\d+)\"?\s*(?=$|[,;])", re.IGNORECASE)
_RESPOND_ASYNC = re.compile(r"(?:^|[,;])\s*respond-async\s*(?=$|[,;])", re.IGNORECASE)


def preferred_wait(prefer: str | None) -> int:
    """Seconds a `Prefer` header (RFC 7240) asks to wait for the answer: its `wait=N`, at most
    MAX_WAIT_SECONDS; 0 without one, or with `respond-async`. A preference, not a demand: what
    cannot be understood is ignored."""
    if not prefer or _RESPOND_ASYNC.search(prefer):
        return 0
    found = _PREFER_WAIT.search(prefer)
    return min(int(found.group(1)), MAX_WAIT_SECONDS) if found else 0


class FinishedListener:
    """The process's subscription, and the waiters it wakes, by conversation id."""

    def __init__(self, settings: Settings) -> None:
        # TCP keep-alive: a connection that died silently is noticed by the kernel, and the
        # subscription is made again.
        self._redis = Redis(
            connection_pool=connection_pool(
                settings, socket_connect_timeout=2, socket_keepalive=True
            )
        )
        self._channel = finished_channel(settings.QUEUE_NAME)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="finished-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose(close_connection_pool=True)

    @contextmanager
    def watch(self, conversation_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when the conversation is announced finished, while in the block."""
        key = str(conversation_id)
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    delay = 0.5
                    async for message in pubsub.listen():
                        data = message.get("data")
                        if isinstance(data, bytes):
                            self._wake(data.decode())
            except (RedisError, OSError) as exc:
                logger.warning("finished_listener_reconnecting", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _wake(self, conversation_id: str) -> None:
        for event in self._waiters.get(conversation_id, ()):
            event.set()


@asynccontextmanager
async def listening(app: FastAPI) -> AsyncIterator[None]:
    """A lifespan: the listener runs while the app does (`app.state.finished_listener`)."""
    settings: Settings = app.state.settings
    listener = FinishedListener(settings)
    listener.start()
    app.state.finished_listener = listener
    try:
        yield
    finally:
        await listener.close()


def get_finished_listener(request: Request) -> FinishedListener:
    listener: FinishedListener = request.app.state.finished_listener
    return listener


async def read_when_finished(
    engine: AsyncEngine,
    listener: FinishedListener,
    *,
    conversation_id: uuid.UUID,
    owner_id: uuid.UUID | None,
    wait_seconds: float,
) -> Row:
    """The conversation as soon as it has ended, or as it is after `wait_seconds`: two reads
    of the row at most, none while waiting. Missing or another's: `NotFoundError` at once."""
    with listener.watch(conversation_id) as finished:
        row = await service.read_conversation(
            engine, conversation_id=conversation_id, owner_id=owner_id
        )
        if ConversationStatus(row["status"]).is_terminal:
            return row
        with suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                await finished.wait()
    return await service.read_conversation(
        engine, conversation_id=conversation_id, owner_id=owner_id
    )
