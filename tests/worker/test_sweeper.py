"""The sweeper repairs what Redis or a dead worker lost, against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from loguru import logger
from sqlalchemy import text

from shared.db import SessionFactory, unit_of_work
from shared.job_contract import generation_job_id
from shared.models import ConversationStatus
from shared.queue import create_queue_pool
from shared.repositories.conversations import ConversationRepository
from tests.factories import load, make_conversation, set_columns
from worker.context import RESOURCES_KEY, WorkerResources
from worker.sweeper import sweep, sweep_job

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
async def queue(res: WorkerResources) -> AsyncIterator[ArqRedis]:
    pool = create_queue_pool(res.settings)
    await pool.delete(res.settings.QUEUE_NAME)
    yield pool
    await pool.delete(res.settings.QUEUE_NAME)
    await pool.aclose()


async def _queued(queue: ArqRedis, conversation_id: uuid.UUID) -> bool:
    return bool(await queue.exists(f"arq:job:{generation_job_id(conversation_id)}"))


async def _drop_job(queue: ArqRedis, conversation_id: uuid.UUID) -> None:
    job_id = generation_job_id(conversation_id)
    await queue.delete(f"arq:job:{job_id}")
    await queue.zrem(queue.default_queue_name, job_id)


async def test_expired_lease_goes_back_to_the_queue(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    cid = await make_conversation(session_factory)
    await set_columns(session_factory, cid, status="running", attempts=1, lease_expires_at=LONG_AGO)
    report = await sweep(res, queue)
    assert report.reclaimed == 1
    assert report.requeued == 1
    row = await load(session_factory, cid)
    assert row.status == ConversationStatus.PENDING
    assert row.lease_expires_at is None
    assert await _queued(queue, cid)
    await _drop_job(queue, cid)


async def test_expired_lease_with_no_attempts_left_fails_with_the_last_error(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    cid = await make_conversation(session_factory)
    await set_columns(
        session_factory,
        cid,
        status="running",
        attempts=res.settings.WORKER_MAX_ATTEMPTS,
        lease_expires_at=LONG_AGO,
        error_message="connection refused",
    )
    report = await sweep(res, queue)
    assert report.reclaimed == 0
    row = await load(session_factory, cid)
    assert row.status == ConversationStatus.FAILED
    assert row.error_code == "max_attempts_exceeded"
    assert row.error_message == (
        f"gave up after {res.settings.WORKER_MAX_ATTEMPTS} attempts; the last one stopped"
        " without reporting (lease expired); last error: connection refused"
    )
    assert row.completed_at is not None
    assert row.lease_expires_at is None
    assert not await _queued(queue, cid)


async def test_an_exhausted_row_without_an_earlier_error_says_only_why_it_gave_up(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    await set_columns(session_factory, cid, status="running", attempts=2, lease_expires_at=LONG_AGO)
    async with unit_of_work(session_factory) as session:
        put_back = await ConversationRepository(session).reclaim_expired_leases(
            max_attempts=2, limit=10
        )
    assert put_back == []
    row = await load(session_factory, cid)
    assert (row.status, row.error_code) == ("failed", "max_attempts_exceeded")
    assert row.error_message == (
        "gave up after 2 attempts; the last one stopped without reporting (lease expired)"
    )


async def test_a_reclaimed_row_keeps_its_last_error_and_is_not_finished(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    await set_columns(
        session_factory,
        cid,
        status="running",
        attempts=1,
        lease_expires_at=LONG_AGO,
        error_code="llm_unavailable",
        error_message="HTTP 503",
    )
    async with unit_of_work(session_factory) as session:
        put_back = await ConversationRepository(session).reclaim_expired_leases(
            max_attempts=2, limit=10
        )
    assert put_back == [cid]
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.error_code, row.error_message) == (
        "pending",
        1,
        "llm_unavailable",
        "HTTP 503",
    )
    assert row.completed_at is None
    assert row.lease_expires_at is None


async def test_a_live_lease_is_left_alone(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    cid = await make_conversation(session_factory)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    await set_columns(session_factory, cid, status="running", attempts=1, lease_expires_at=soon)
    assert (await sweep(res, queue)).reclaimed == 0
    assert (await load(session_factory, cid)).status == ConversationStatus.RUNNING


async def test_a_pending_row_whose_job_was_lost_is_enqueued_once(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    cid = await make_conversation(session_factory)
    await set_columns(session_factory, cid, updated_at=LONG_AGO)
    assert (await sweep(res, queue)).requeued == 1
    assert await _queued(queue, cid)
    # The job is still there: the next sweep leaves the queue as it is.
    assert (await sweep(res, queue)).requeued == 0
    assert await queue.zcard(res.settings.QUEUE_NAME) == 1
    await _drop_job(queue, cid)


async def test_a_fresh_pending_row_gets_its_grace_period(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    cid = await make_conversation(session_factory)
    assert (await sweep(res, queue)).requeued == 0
    assert not await _queued(queue, cid)


async def test_a_retry_is_not_requeued_before_it_is_due(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    cid = await make_conversation(session_factory)
    later = datetime.now(UTC) + timedelta(minutes=5)
    await set_columns(session_factory, cid, updated_at=LONG_AGO, next_attempt_at=later)
    assert (await sweep(res, queue)).requeued == 0


async def _expired(session_factory: SessionFactory, count: int) -> set[uuid.UUID]:
    ids = set()
    for _ in range(count):
        cid = await make_conversation(session_factory)
        await set_columns(
            session_factory, cid, status="running", attempts=1, lease_expires_at=LONG_AGO
        )
        ids.add(cid)
    return ids


async def test_a_sweeper_skips_the_rows_another_sweeper_holds(
    session_factory: SessionFactory,
) -> None:
    """Sweeper A has taken three expired rows and not committed yet; sweeper B, meanwhile,
    takes the other three without waiting for A's locks (a wait would trip its lock timeout)
    and without touching A's rows. Each row is reclaimed exactly once."""
    expired = await _expired(session_factory, 6)
    async with unit_of_work(session_factory) as first:
        mine = await ConversationRepository(first).reclaim_expired_leases(max_attempts=5, limit=3)
        assert len(mine) == 3
        async with unit_of_work(session_factory) as second:
            await second.execute(text("SET LOCAL lock_timeout = '2s'"))
            theirs = await ConversationRepository(second).reclaim_expired_leases(
                max_attempts=5, limit=500
            )
    assert len(theirs) == 3
    assert set(mine).isdisjoint(theirs)
    assert set(mine) | set(theirs) == expired
    for cid in expired:
        row = await load(session_factory, cid)
        assert (row.status, row.attempts, row.lease_expires_at) == ("pending", 1, None)


async def test_concurrent_sweeps_requeue_each_expired_lease_exactly_once(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    expired = await _expired(session_factory, 8)
    reports = await asyncio.gather(*(sweep(res, queue) for _ in range(3)))
    assert sum(r.reclaimed for r in reports) == 8
    assert sum(r.requeued for r in reports) == 8
    assert await queue.zcard(res.settings.QUEUE_NAME) == 8
    for cid in expired:
        assert await _queued(queue, cid)
        await _drop_job(queue, cid)


async def test_a_reclaimed_rows_job_is_released_from_the_dead_workers_mark(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    (dead,) = await _expired(session_factory, 1)
    live = await make_conversation(session_factory)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    await set_columns(session_factory, live, status="running", attempts=1, lease_expires_at=soon)
    for cid in (dead, live):
        await queue.set(in_progress_key_prefix + generation_job_id(cid), b"1")
    await sweep(res, queue)
    assert not await queue.exists(in_progress_key_prefix + generation_job_id(dead))
    # A live lease's job is still being worked on: its mark stays.
    assert await queue.exists(in_progress_key_prefix + generation_job_id(live))
    await queue.delete(in_progress_key_prefix + generation_job_id(live))
    await _drop_job(queue, dead)


async def test_a_sweep_tick_with_redis_down_loses_nothing(
    res: WorkerResources, session_factory: SessionFactory, queue: ArqRedis
) -> None:
    """Redis refuses the tick's enqueues: the tick ends quietly (the cron goes on), the rows
    stay pending in PostgreSQL, and the next tick with Redis back queues them."""
    (reclaimed,) = await _expired(session_factory, 1)
    lost = await make_conversation(session_factory)
    await set_columns(session_factory, lost, updated_at=LONG_AGO)
    nowhere = create_queue_pool(
        res.settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"})
    )
    skipped: list[str] = []
    handler = logger.add(
        lambda message: skipped.append(message), format="{message}", level="WARNING"
    )
    try:
        await sweep_job({RESOURCES_KEY: res, "redis": nowhere})
    finally:
        logger.remove(handler)
        await nowhere.aclose()
    assert [line.strip() for line in skipped] == ["sweep_skipped"]
    for cid in (reclaimed, lost):
        assert (await load(session_factory, cid)).status == ConversationStatus.PENDING
        assert not await _queued(queue, cid)
    # The reclaimed row waits out its grace period like any pending row (here: long past).
    await set_columns(session_factory, reclaimed, updated_at=LONG_AGO)
    report = await sweep(res, queue)
    assert (report.reclaimed, report.requeued) == (0, 2)
    for cid in (reclaimed, lost):
        assert await _queued(queue, cid)
        await _drop_job(queue, cid)
