"""The sweeper repairs what Redis or a dead worker lost, against real PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from arq.connections import ArqRedis

from shared.db import SessionFactory
from shared.jobs import generation_job_id
from shared.models import ConversationStatus
from shared.queue import create_queue_pool
from tests.factories import load, make_conversation, set_columns
from worker.context import WorkerResources
from worker.sweeper import sweep

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
    assert row.error_message is not None
    assert "lease expired" in row.error_message
    assert "connection refused" in row.error_message
    assert row.completed_at is not None
    assert not await _queued(queue, cid)


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
