"""The arq worker as configured for production, run in burst mode against real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from shared.db import SessionFactory
from shared.job_contract import GENERATE_CONVERSATION, generation_job_id, serialize_job
from shared.models import ConversationStatus
from shared.queue import create_queue_pool, enqueue_generation
from shared.settings import Settings
from tests.factories import load, make_conversation
from tests.support.fake_llm import FakeLLMServer
from worker.arq_worker import build_worker
from worker.observability import Observability
from worker.scheduler import Scheduler


@pytest.fixture
async def queue(worker_settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = create_queue_pool(worker_settings)
    await pool.delete(worker_settings.QUEUE_NAME)
    yield pool
    await pool.delete(worker_settings.QUEUE_NAME)
    await pool.aclose()


async def _run_burst(settings: Settings, obs: Observability) -> None:
    worker = build_worker(settings, obs, burst=True, handle_signals=False, poll_delay=0.05)
    try:
        await worker.async_run()
    finally:
        await worker.close()


async def test_queued_conversations_are_completed(
    worker_settings: Settings,
    session_factory: SessionFactory,
    queue: ArqRedis,
    fake_llm: FakeLLMServer,
    observability: Observability,
) -> None:
    ids = [await make_conversation(session_factory, prompt=f"p{i}") for i in range(3)]
    for cid in ids:
        assert await enqueue_generation(queue, cid)
    await _run_burst(worker_settings, observability)
    for cid in ids:
        assert (await load(session_factory, cid)).status == ConversationStatus.COMPLETED
    assert fake_llm.stats().generation_calls == 3


async def _put_raw_job(queue: ArqRedis, job_id: str, raw: bytes, queue_name: str) -> None:
    await queue.set(f"arq:job:{job_id}", raw)
    # arq reads a zero score as "already finished": score it like a real job, in ms.
    await queue.zadd(queue_name, {job_id: time.time() * 1000})


async def test_malformed_jobs_are_dropped_and_the_worker_goes_on(
    worker_settings: Settings,
    session_factory: SessionFactory,
    queue: ArqRedis,
    fake_llm: FakeLLMServer,
    observability: Observability,
) -> None:
    name = worker_settings.QUEUE_NAME
    # A pickle payload is not even parsed, let alone run.
    await _put_raw_job(queue, "pickled", b"\x80\x04\x95\x10\x00cos\nsystem\n", name)
    bad_args = {"t": 1, "f": GENERATE_CONVERSATION, "a": ["not-a-uuid"], "k": {}, "et": 0}
    await _put_raw_job(queue, "bad-args", serialize_job(bad_args), name)
    cid = await make_conversation(session_factory)
    await enqueue_generation(queue, cid)
    await _run_burst(worker_settings, observability)
    assert (await load(session_factory, cid)).status == ConversationStatus.COMPLETED
    assert fake_llm.stats().generation_calls == 1
    assert await queue.zcard(name) == 0


async def test_a_job_for_an_unknown_conversation_is_a_no_op(
    worker_settings: Settings,
    queue: ArqRedis,
    fake_llm: FakeLLMServer,
    session_factory: SessionFactory,
    observability: Observability,
) -> None:
    await enqueue_generation(queue, uuid.uuid4())
    await _run_burst(worker_settings, observability)
    assert fake_llm.stats().generation_calls == 0
    assert await queue.zrange(worker_settings.QUEUE_NAME, 0, -1) == []


async def test_a_stop_that_reaches_a_job_as_it_finishes_still_closes_cleanly(
    worker_settings: Settings,
    session_factory: SessionFactory,
    queue: ArqRedis,
    fake_llm: FakeLLMServer,
    observability: Observability,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop cancels a job while its end (shielded) is on the way to Redis: the close
    waits for that end before it shuts down, and does not end in the cancellation."""
    ending, release = asyncio.Event(), asyncio.Event()
    ends_written: list[str] = []
    finish = Scheduler.finish

    async def held_finish(self: Scheduler, job_id: str, **kwargs: Any) -> None:
        ending.set()
        await release.wait()
        await finish(self, job_id, **kwargs)
        ends_written.append(job_id)

    monkeypatch.setattr(Scheduler, "finish", held_finish)
    worker = build_worker(worker_settings, observability, handle_signals=False, poll_delay=0.05)
    on_shutdown = worker.on_shutdown
    assert on_shutdown is not None
    shutting_down = asyncio.Event()
    seen_at_shutdown: list[list[str]] = []

    async def recorded_shutdown(ctx: dict[Any, Any]) -> None:
        shutting_down.set()
        seen_at_shutdown.append(list(ends_written))
        await on_shutdown(ctx)

    worker.on_shutdown = recorded_shutdown
    cid = await make_conversation(session_factory)
    job_id = generation_job_id(cid)
    await enqueue_generation(queue, cid)
    running = asyncio.create_task(worker.async_run())
    async with asyncio.timeout(10):
        await ending.wait()
    jobs = list(worker.tasks.values())
    closing = asyncio.create_task(worker.close())
    await asyncio.wait(jobs)  # the stop has reached them: cancelled inside the shield
    assert all(job.cancelled() for job in jobs)
    # A close that does not wait shuts down now; one that waits is still waiting after a
    # second (only a close that does not wait can make this test fail).
    await asyncio.wait(
        [closing, asyncio.create_task(shutting_down.wait())],
        timeout=1.0,
        return_when=asyncio.FIRST_COMPLETED,
    )
    release.set()
    await closing
    with pytest.raises(asyncio.CancelledError):
        await running
    assert seen_at_shutdown == [[job_id]]
    assert (await load(session_factory, cid)).status == ConversationStatus.COMPLETED
    # The end was written: nothing of the job is left queued or marked in progress.
    assert await queue.zscore(worker_settings.QUEUE_NAME, job_id) is None
    assert not await queue.exists(in_progress_key_prefix + job_id)
