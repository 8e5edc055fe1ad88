"""arq's Worker, woken by new work instead of finding it on its next poll.

arq polls the queue every `poll_delay` seconds, so a job waits half that on average before a
worker even looks, and a full worker notices a free slot only at its next poll. Here every
enqueue publishes on the queue's wake channel (`shared.queue.enqueue_generation`) and a
finished job frees its slot with a wake-up too; the poll stays, as the fallback for deferred
jobs and for wake-ups lost while Redis was away. An idle worker sends a handful of commands
per second, as before.

Jobs start in one round trip per batch: a script takes every due job of the batch that no one
is running (arq's own in-progress key, set as arq sets it), where arq spends four sequential
round trips per job (WATCH, EXISTS, ZSCORE, MULTI/EXEC). Under load each of those waits for the
event loop to come round again, so a full worker's slots refilled at tens of jobs a second.

Each worker also keeps its heartbeat in one sorted set per queue (member `host:pid`, score
the time it expires), so counting live workers is one `ZCOUNT` however large the keyspace.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import suppress
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from loguru import logger
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from shared.completion import cancel_channel
from shared.logs import instance_id
from shared.queue import heartbeat_registry, wake_channel
from worker.context import RESOURCES_KEY, WorkerResources

_RESUBSCRIBE_MAX_SECONDS = 5.0
_LISTEN_SECONDS = 1.0

# KEYS[1] the queue; ARGV: now (ms), the in-progress key's lifetime (ms), its prefix, how many
# to start at most, job ids. Returns the started ids, each followed by its score, in the order
# given: jobs already running (on this worker or another) are passed over, not counted.
_START = """
local started = {}
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[4])
for i = 5, #ARGV do
  if #started >= 2 * limit then
    break
  end
  local job_id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], job_id)
  local in_progress = ARGV[3] .. job_id
  if score and tonumber(score) <= now and redis.call('EXISTS', in_progress) == 0 then
    redis.call('PSETEX', in_progress, ARGV[2], '1')
    started[#started + 1] = job_id
    started[#started + 1] = score
  end
end
return started
"""
_START_SCRIPT = AsyncScript(None, _START.encode())  # type: ignore[arg-type]  # bytes: no client needed


class QueueWorker(Worker):
    def __init__(self, *args: Any, heartbeat_ttl_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()
        self._heartbeat_ttl = heartbeat_ttl_seconds
        self._member = instance_id()
        self._last_heartbeat = 0.0
        # Whether this run ever got an answer from Redis: a run that loses it afterwards is a
        # new outage, one that never reached it the next failed restart of the same one.
        self.reached_redis = False

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
                self.reached_redis = True
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
        """Set the wake event on every announcement, stop the generations clients cancel;
        resubscribe after a lost connection."""
        delay = 0.1
        wake, cancel = wake_channel(self.queue_name), cancel_channel(self.queue_name)
        while True:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(wake, cancel)
                delay = 0.1
                while True:
                    # A bounded wait: the pool's socket timeout would end an unbounded one.
                    message = await pubsub.get_message(timeout=_LISTEN_SECONDS)
                    if message is None:
                        continue
                    if message["channel"] == cancel.encode():
                        self._cancel(message["data"])
                    else:
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

    def _cancel(self, data: bytes) -> None:
        resources = self.ctx.get(RESOURCES_KEY)
        if not isinstance(resources, WorkerResources):
            return  # still starting: it runs nothing yet
        try:
            conversation_id = uuid.UUID(data.decode())
        except ValueError:
            return
        if resources.running.cancel(conversation_id):
            logger.info("generation_cancel_requested", conversation_id=str(conversation_id))

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Start as many of `job_ids` as there are free slots, in one round trip; a job that
        is running elsewhere, deferred, or gone is skipped, as arq skips it."""
        free = self.max_jobs - self.job_counter
        # Every queued id goes to the script, not only the first `free`: the first ones may be
        # running on another worker (arq keeps a job in the queue until it ends).
        candidates = [i.decode() for i in job_ids if i.decode() not in self.tasks]
        if free <= 0 or not candidates:
            return
        reply = await _START_SCRIPT(
            keys=[self.queue_name],
            args=[
                timestamp_ms(),
                int(self.in_progress_timeout_s * 1000),
                in_progress_key_prefix,
                free,
                *candidates,
            ],
            client=self.pool,
        )
        for job_id, score in zip(reply[::2], reply[1::2], strict=True):
            await self.sem.acquire()  # free: at most `free` jobs were started
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id.decode(), int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id.decode()] = task

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
