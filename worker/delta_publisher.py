"""Publishing an attempt's text as the model streams it, off the generation's path, and the
announcement that a conversation ended.

The model's pieces go into a buffer (`add`, never waits); a background task sends what has
gathered every `EVENTS_FLUSH_INTERVAL_MS`, one script call per batch (`shared.stream_events`).
Redis being slow or gone never slows or fails the generation: a failed or refused append
stops the publishing for the rest of the attempt, and the stream simply ends incomplete.
PostgreSQL still gets the whole answer, and readers get it from there in their `done` event.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from loguru import logger
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.exceptions import RedisError

from shared.completion import announce_finished
from shared.stream_events import REFUSED, EventStreamWriter
from worker.context import WorkerResources

# What the attempt waits, at most, for its text to reach the stream before the row is written
# (so that a reader who sees the outcome has seen every piece) and for the `end` mark after.
FINAL_WRITE_SECONDS = 0.5
# Text waiting for a slow Redis beyond this is not kept: the publishing stops instead.
MAX_BUFFERED_CHARS = 256 * 1024


async def announce_end(res: WorkerResources, conversation_id: uuid.UUID) -> None:
    """Tell every API replica that the conversation ended, after its outcome is written:
    long-polls wake at once. Best effort, like the deltas: a lost word only lets them time out."""
    try:
        async with asyncio.timeout(FINAL_WRITE_SECONDS):
            await announce_finished(res.events_redis, res.settings.QUEUE_NAME, conversation_id)
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("finished_not_announced", error=type(exc).__name__)


@contextmanager
def publishing(
    res: WorkerResources, conversation_id: uuid.UUID, *, attempt: int
) -> Iterator[DeltaPublisher]:
    """The attempt's publisher, stopped however the attempt ends."""
    publisher = DeltaPublisher(
        res.events,
        conversation_id,
        attempt=attempt,
        flush_interval=res.settings.EVENTS_FLUSH_INTERVAL_MS / 1000,
        deltas=res.settings.EVENTS_PUBLISH_ENABLED,
    )
    try:
        yield publisher
    finally:
        publisher.close()


class DeltaPublisher:
    """One attempt's publisher. `add` is the model client's text sink; `finish` drains before
    the outcome is written, `end` marks the stream finished after, `close` stops it."""

    def __init__(
        self,
        writer: EventStreamWriter | None,
        conversation_id: uuid.UUID,
        *,
        attempt: int,
        flush_interval: float,
        deltas: bool = True,
    ) -> None:
        self._writer = writer
        self._conversation_id = conversation_id
        self._attempt = attempt
        # A handed-back attempt keeps its number; the run id tells its next run from it.
        self._run = uuid.uuid4().hex
        self._interval = flush_interval
        self._buffer: list[str] = []
        self._buffered = 0
        self._has_text = asyncio.Event()
        self._draining = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Without deltas (EVENTS_PUBLISH_ENABLED off) the stream still gets its `end`, so
        # readers learn of the outcome at once.
        self._stopped = writer is None or not deltas

    def add(self, text: str) -> None:
        """Take a piece of the answer; returns at once."""
        if self._stopped:
            return
        self._buffered += len(text)
        if self._buffered > MAX_BUFFERED_CHARS:
            self._stop("buffer_full")
            return
        self._buffer.append(text)
        self._has_text.set()
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name="delta-publisher")

    async def finish(self) -> None:
        """Send what is buffered now and stop (waits `FINAL_WRITE_SECONDS` at most)."""
        self._draining.set()
        self._has_text.set()
        if self._task is None or self._task.done():
            return
        # Waits without wrapping the pump in more tasks, and leaves it running on a timeout.
        done, _ = await asyncio.wait((self._task,), timeout=FINAL_WRITE_SECONDS)
        if not done:
            self._stop("final_write_timeout")
            return
        self._task.result()

    async def end(self) -> None:
        """Mark the stream finished, once the outcome is in PostgreSQL. Attempted even when
        the deltas stopped early: readers waiting on the stream then learn at once."""
        if self._writer is None:
            return
        try:
            async with asyncio.timeout(FINAL_WRITE_SECONDS):
                await self._writer.append_end(
                    self._conversation_id, attempt=self._attempt, run=self._run
                )
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("events_end_not_written", error=type(exc).__name__)

    def close(self) -> None:
        """Stop publishing: nothing more is sent (an append already on its way still lands)."""
        self._stopped = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _pump(self) -> None:
        # Untraced: a span per append (every flush interval of every generation) would be most
        # of a job's spans and say nothing its job span and the stream's `end` do not.
        with suppress_instrumentation():
            await self._pump_untraced()

    async def _pump_untraced(self) -> None:
        assert self._writer is not None
        while not self._stopped:
            await self._has_text.wait()
            if not self._draining.is_set():
                # Let more pieces gather; `finish` cuts the wait short.
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._draining.wait()
            self._has_text.clear()
            text = "".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            if text:
                try:
                    seq = await self._writer.append_delta(
                        self._conversation_id, attempt=self._attempt, run=self._run, text=text
                    )
                except (RedisError, OSError) as exc:
                    self._stop("redis_error", error=type(exc).__name__)
                    return
                if seq == REFUSED:
                    self._stop("stream_taken_over")
                    return
            if self._draining.is_set() and not self._buffer:
                return

    def _stop(self, reason: str, **details: str) -> None:
        if not self._stopped:
            logger.warning("events_publishing_stopped", reason=reason, **details)
        self._stopped = True
        self._buffer.clear()
