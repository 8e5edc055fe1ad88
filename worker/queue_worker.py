"""arq's Worker, woken by new work instead of finding it on its next poll.

arq polls the queue every `poll_delay` seconds, so a job waits half that on average before a
worker even looks, and a full worker notices a free slot only at its next poll. Here every
enqueue publishes on the queue's wake channel (`shared.queue.enqueue_generation`) and a
finished job frees its slot with a wake-up too; the poll stays, as the fallback for deferred
jobs and for wake-ups lost while Redis was away. An idle worker sends a handful of commands
per second, as before.

Which jobs start is the scheduler's (`worker/scheduler.py`): one script per poll takes as many
as there are free slots, in fair order across users and priorities, each only if its model
servers have room, where arq spends four sequential round trips per job (WATCH, EXISTS,
ZSCORE, MULTI/EXEC) in enqueue order. A job's end is one script too (arq's writes and the
admission token back).

Each worker also keeps its heartbeat in one sorted set per queue (member `host:pid`, score
the time it expires), so counting live workers is one `ZCOUNT` however large the keyspace.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from arq.utils import timestamp_ms
from arq.worker import Worker
from loguru import logger
from redis.exceptions import RedisError

from shared.completion import cancel_channel
from shared.logs import instance_id
from shared.queue import RUNNING_MARK, heartbeat_registry, wake_channel
from worker.context import RESOURCES_KEY, WorkerResources
from worker.scheduler import Scheduler

_RESUBSCRIBE_MAX_SECONDS = 5.0
_LISTEN_SECONDS = 1.0


class QueueWorker(Worker):
    def __init__(
        self,
        *args: Any,
        heartbeat_ttl_seconds: float,
        provider_capacities: Mapping[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler = Scheduler(
            self.pool,
            self.queue_name,
            in_progress_ms=int(self.in_progress_timeout_s * 1000),
            capacities=dict(provider_capacities or {}),
        )
        self._wake = asyncio.Event()
        self._heartbeat_ttl = heartbeat_ttl_seconds
        self._member = instance_id()
        self._last_heartbeat = 0.0
        self._finishing: set[asyncio.Task[Any]] = set()
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

    async def _poll_iteration(self) -> None:
        """arq's poll, with the scheduler choosing what starts (arq reads the queue in score
        order and starts each job in its own round trips)."""
        free = self.max_jobs - self.job_counter
        if self.burst and self.max_burst_jobs >= 0:
            free = min(free, self.max_burst_jobs - self._jobs_started())
        if free > 0 and self.allow_pick_jobs:
            await self.start_jobs(free)
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # an error in run_job is raised here, as arq does
        await self.heart_beat()

    async def start_jobs(self, free: int) -> None:  # type: ignore[override]  # arq's takes ids
        """Start up to `free` jobs, as the scheduler picks them, in one round trip."""
        started = await self.scheduler.take(
            now_ms=timestamp_ms(), limit=free, scan=self.queue_read_limit
        )
        for job in started:
            await self.sem.acquire()  # free: at most `free` jobs were started
            self.job_counter += 1
            # arq adds a retry's delay to the score it was given: the one the job has now.
            task = self.loop.create_task(self.run_job(job.job_id, RUNNING_MARK))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job.job_id] = task

    @contextmanager
    def _while_finishing(self) -> Iterator[None]:
        """Count the current task (arq's shield around a job's end) until the end is written."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task
            yield
            return
        self._finishing.add(task)
        try:
            yield
        finally:
            self._finishing.discard(task)

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's end of a job in one script that also gives back its admission token and
        makes a job shutdown took away due again."""
        with self._while_finishing():
            if result_data is not None:  # never (keep_result=0); arq's way keeps the result
                await super().finish_job(
                    job_id,
                    finish,
                    result_data,
                    result_timeout_s,
                    keep_result_forever,
                    incr_score,
                    keep_in_progress,
                )
                await self.scheduler.give_back_token(job_id)
                return
            await self.scheduler.finish(
                job_id,
                now_ms=timestamp_ms(),
                done=finish,
                incr_score=incr_score,
                keep_in_progress_ms=None
                if keep_in_progress is None
                else int(keep_in_progress * 1000),
            )

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        with self._while_finishing():
            await super().finish_failed_job(job_id, result_data)
            await self.scheduler.give_back_token(job_id)

    def _release_sem_dec_counter_on_complete(self) -> None:
        # A slot is free and, if the job held one, an admission token is back: work may be
        # waiting for either, so look at once, not at the next poll.
        super()._release_sem_dec_counter_on_complete()
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
        """arq's close, except that a job the stop reaches while it finishes does not end it.

        arq cancels the running jobs and gathers them: one cancelled during its (shielded)
        end ends cancelled, which raised out of the close, so the worker skipped its shutdown
        and closed Redis under the end still being written. Here the close waits for the
        jobs and for those ends, then goes on."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if self._pool is None:
            return
        await asyncio.gather(*self.tasks.values(), *self._finishing, return_exceptions=True)
        self.tasks.clear()
        with suppress(RedisError, OSError):
            await self.pool.zrem(heartbeat_registry(self.queue_name), self._member)
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None
