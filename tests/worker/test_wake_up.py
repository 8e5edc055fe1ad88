"""An idle worker is woken by new work and by a freed slot; its heartbeat is one registry.

The workers here poll only once a minute: anything they do within the tests' few seconds
was started by a wake-up, not by the poll.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from redis.asyncio.client import PubSub

from shared.db import SessionFactory
from shared.models import ConversationStatus
from shared.queue import create_queue_pool, enqueue_generation, heartbeat_registry, live_workers
from shared.settings import Settings
from tests.factories import load, make_conversation
from tests.support.fake_llm import FakeLLMServer
from worker.arq_worker import build_worker
from worker.observability import Observability
from worker.queue_worker import QueueWorker

NEVER_POLLS = 60.0


@pytest.fixture
async def queue(worker_settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = create_queue_pool(worker_settings)
    await pool.delete(worker_settings.QUEUE_NAME, heartbeat_registry(worker_settings.QUEUE_NAME))
    yield pool
    await pool.delete(worker_settings.QUEUE_NAME, heartbeat_registry(worker_settings.QUEUE_NAME))
    await pool.aclose()


IdleWorker = Callable[[int], Awaitable[QueueWorker]]


@pytest.fixture
async def idle_worker(
    worker_settings: Settings, observability: Observability, queue: ArqRedis
) -> AsyncIterator[IdleWorker]:
    """Start a worker with `max_jobs` slots that has done its first poll and now waits.

    Its sweeper leaves pending rows alone for a minute, so it cannot be what queues them."""
    running: list[tuple[QueueWorker, asyncio.Task[None]]] = []

    async def start(max_jobs: int) -> QueueWorker:
        settings = worker_settings.model_copy(
            update={"WORKER_MAX_JOBS": max_jobs, "WORKER_SWEEP_PENDING_GRACE_SECONDS": 60.0}
        )
        worker = build_worker(settings, observability, handle_signals=False, poll_delay=NEVER_POLLS)
        running.append((worker, asyncio.create_task(worker.async_run())))
        async with asyncio.timeout(10):
            while not await live_workers(queue, settings.QUEUE_NAME):
                await asyncio.sleep(0.01)
        return worker

    yield start
    for worker, task in running:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await worker.close()


async def _until_completed(session_factory: SessionFactory, *ids: uuid.UUID) -> None:
    async with asyncio.timeout(10):
        while True:
            rows = [await load(session_factory, cid) for cid in ids]
            if all(row.status == ConversationStatus.COMPLETED for row in rows):
                return
            await asyncio.sleep(0.02)


async def test_an_enqueue_wakes_an_idle_worker(
    idle_worker: IdleWorker,
    queue: ArqRedis,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
) -> None:
    await idle_worker(4)
    cid = await make_conversation(session_factory)
    await enqueue_generation(queue, cid)
    await _until_completed(session_factory, cid)


async def test_a_freed_slot_takes_the_next_job_at_once(
    idle_worker: IdleWorker,
    queue: ArqRedis,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
) -> None:
    """One slot: the second job is announced while the worker is full, so only the slot
    freed by the first job can start it before the next poll."""
    worker = await idle_worker(1)
    async with asyncio.timeout(10):  # the start-up sweep has given its slot back
        while worker.job_counter:
            await asyncio.sleep(0.01)
    fake_llm.configure(hold=True)
    first = await make_conversation(session_factory)
    second = await make_conversation(session_factory)
    await enqueue_generation(queue, first)
    async with asyncio.timeout(10):
        while fake_llm.stats().generation_calls < 1:
            await asyncio.sleep(0.01)
    await enqueue_generation(queue, second)
    fake_llm.configure(hold=False)
    await _until_completed(session_factory, first, second)


async def test_the_enqueue_announces_the_job_on_the_wake_channel(
    worker_settings: Settings, queue: ArqRedis
) -> None:
    listener = aioredis.Redis.from_url(worker_settings.REDIS_URL)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(f"{worker_settings.QUEUE_NAME}:wake")
        cid = uuid.uuid4()
        assert await enqueue_generation(queue, cid)
        assert await _next_message(pubsub) == f"conversation:{cid}".encode()
        # A second enqueue of the same conversation adds nothing and announces nothing; the
        # marker published after it is the next message.
        assert not await enqueue_generation(queue, cid)
        await listener.publish(f"{worker_settings.QUEUE_NAME}:wake", "marker")
        assert await _next_message(pubsub) == b"marker"
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await queue.delete(f"arq:job:conversation:{cid}")


async def _next_message(pubsub: PubSub) -> bytes:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(timeout=1)
            if message is not None:
                data: bytes = message["data"]
                return data


async def test_live_workers_count_fresh_heartbeats_only(
    worker_settings: Settings, queue: ArqRedis
) -> None:
    name = worker_settings.QUEUE_NAME
    registry = heartbeat_registry(name)
    now = time.time()
    await queue.zadd(registry, {"host-a:1": now + 30, "host-a:2": now + 30, "host-b:1": now - 1})
    assert await live_workers(queue, name) == 2
    assert await live_workers(queue, name, host="host-a") == 2
    assert await live_workers(queue, name, host="host-b") == 0
    assert await live_workers(queue, name, host="host") == 0


async def test_a_stopped_worker_leaves_the_registry(
    worker_settings: Settings, observability: Observability, queue: ArqRedis
) -> None:
    worker = build_worker(worker_settings, observability, handle_signals=False, burst=True)
    await worker.async_run()
    assert await live_workers(queue, worker_settings.QUEUE_NAME) == 1
    await worker.close()
    assert await live_workers(queue, worker_settings.QUEUE_NAME) == 0
