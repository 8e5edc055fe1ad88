"""arq's Worker, woken by new work instead of finding it on its next poll.

arq polls the queue every `poll_delay` seconds, so a job waits half that on average before a
worker even looks, and a full worker notices a free slot only at its next poll. Here every
enqueue publishes on the queue's wake channel (`shared.queue.enqueue_generation`) and a
finished job frees its slot with a wake-up too; the poll stays, as the fallback for deferred
jobs and for wake-ups lost while Redis was away. An idle worker sends a handful of commands
per second, as before.

Each worker also keeps its heartbeat in one sorted set per queue (member `host:pid`, score
the time it expires), so counting live workers is one `ZCOUNT` however large the keyspace.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from contextlib import suppress
from typing import Any

from arq.worker import Worker
from loguru import logger
from redis.exceptions import RedisError

from shared.queue import heartbeat_registry, wake_channel

_RESUBSCRIBE_MAX_SECONDS = 5.0
_LISTEN_SECONDS = 1.0


class QueueWorker(Worker):
    def __init__(self, *args: Any, heartbeat_ttl_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()
        self._heartbeat_ttl = heartbeat_ttl_seconds
        self._member = f"{socket.gethostname()}:{os.getpid()}"
        self._last_heartbeat = 0.0

    async def main(self) -> None:
        """arq's main loop, with its fixed sleep replaced by a wait that new work cuts short."""
        logger.info("worker_starting", functions=sorted(self.functions))
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen_for_work(), name="wake-listener")
        try:
            while True:
                self._wake.clear()
                await self._poll_iteration()
                if self.burst and await self._burst_done():
                    return
                with suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._wake.wait()
        finally:
            listener.cancel()
            with suppress(asyncio.CancelledError):
                await listener

    async def _burst_done(self) -> bool:
        if 0 <= self.max_burst_jobs <= self._jobs_started() or not await self.pool.zcard(
            self.queue_name
        ):
            await asyncio.gather(*self.tasks.values())
            return True
        return False

    async def _listen_for_work(self) -> None:
        """Set the wake event on every announcement; resubscribe after a lost connection."""
        delay = 0.1
        while True:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(wake_channel(self.queue_name))
                delay = 0.1
                while True:
                    # A bounded wait: the pool's socket timeout would end an unbounded one.
                    message = await pubsub.get_message(timeout=_LISTEN_SECONDS)
                    if message is not None:
                        self._wake.set()
            except (RedisError, OSError) as exc:
                logger.debug("wake_listener_reconnecting", error=type(exc).__name__)
            finally:
                with suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            # Anything announced meanwhile is found by the next poll; look now in case.
            self._wake.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESUBSCRIBE_MAX_SECONDS)

    def _release_sem_dec_counter_on_complete(self) -> None:
        # A full worker skips the queue; once a slot is free, look at once, not at the poll.
        was_full = self.job_counter >= self.max_jobs
        super()._release_sem_dec_counter_on_complete()
        if was_full:
            self._wake.set()

    async def record_health(self) -> None:
        """The heartbeat: this process's member in the queue's registry, refreshed every
        `health_check_interval`, which counts live workers without a scan. arq's own key
        per process stays (its status line, read by people and the test harness)."""
        await super().record_health()
        now = time.time()
        if now - self._last_heartbeat < self.health_check_interval:
            return
        self._last_heartbeat = now
        registry = heartbeat_registry(self.queue_name)
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.zadd(registry, {self._member: now + self._heartbeat_ttl})
            # Members of workers that died without a goodbye leave once they expire.
            pipe.zremrangebyscore(registry, "-inf", now - self._heartbeat_ttl)
            await pipe.execute()

    async def close(self) -> None:
        with suppress(RedisError, OSError):
            if self._pool is not None:
                await self.pool.zrem(heartbeat_registry(self.queue_name), self._member)
        await super().close()
