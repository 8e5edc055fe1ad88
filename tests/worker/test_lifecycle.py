"""Outcomes and the repository's moves, on real PostgreSQL: what each one writes and to whom."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import func, update
from sqlalchemy.engine import URL

from shared.db import SessionFactory, unit_of_work
from shared.lifecycle import MAX_ERROR_MESSAGE_CHARS, Outcome
from shared.models import Conversation, ConversationStatus
from shared.repositories.conversations import ConversationRepository
from tests.factories import load, make_conversation, set_columns
from tests.support.fake_llm import FakeLLMServer
from tests.support.log_capture import captured_logging
from worker.context import WorkerResources
from worker.generation import run_generation

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)


def test_outcomes_say_which_state_they_lead_to() -> None:
    assert Outcome.cancelled() == Outcome(ConversationStatus.CANCELLED)
    assert Outcome.handed_back() == Outcome(ConversationStatus.PENDING, hand_back=True)
    failed = Outcome.failed("code", "x" * (MAX_ERROR_MESSAGE_CHARS + 5))
    assert (failed.status, failed.error_code) == (ConversationStatus.FAILED, "code")
    assert failed.error_message == "x" * MAX_ERROR_MESSAGE_CHARS == "x" * 2000
    retry = Outcome.retry("busy", "y" * 2001, delay_seconds=1.5)
    assert (retry.status, retry.error_code, retry.retry_in_seconds, retry.hand_back) == (
        ConversationStatus.PENDING,
        "busy",
        1.5,
        False,
    )
    assert retry.error_message == "y" * 2000


def test_a_completed_outcome_keeps_the_answer_and_its_numbers() -> None:
    done = Outcome.completed(
        text="a\x00b",
        input_tokens=3,
        output_tokens=4,
        latency_ms=12.34567,
        finish_reason="length",
        prompt_version="v9",
    )
    assert done == Outcome(
        ConversationStatus.COMPLETED,
        response="a\ufffdb",
        input_tokens=3,
        output_tokens=4,
        latency_ms=12.346,
        finish_reason="length",
        prompt_version="v9",
    )
    assert done.total_tokens == 7
    unknown = Outcome.completed(
        text="",
        input_tokens=None,
        output_tokens=4,
        latency_ms=1,
        finish_reason=None,
        prompt_version="v1",
    )
    assert unknown.total_tokens is None


async def load_any(session_factory: SessionFactory, conversation_id: uuid.UUID) -> Conversation:
    """The row, deleted or not."""
    async with session_factory() as session:
        row = await session.get(Conversation, conversation_id)
    assert row is not None
    return row


async def _claimed(session_factory: SessionFactory) -> uuid.UUID:
    cid = await make_conversation(session_factory)
    async with unit_of_work(session_factory) as session:
        assert await ConversationRepository(session).claim(cid, lease_seconds=30) is not None
    return cid


async def _settle(session_factory: SessionFactory, cid: uuid.UUID, outcome: Outcome) -> bool:
    async with unit_of_work(session_factory) as session:
        return await ConversationRepository(session).settle(cid, outcome, attempt=1)


async def test_a_handed_back_attempt_is_not_spent(session_factory: SessionFactory) -> None:
    cid = await _claimed(session_factory)
    assert await _settle(session_factory, cid, Outcome.handed_back())
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.lease_expires_at, row.completed_at) == (
        "pending",
        0,
        None,
        None,
    )
    assert (row.error_code, row.next_attempt_at) == (None, None)


async def test_a_retry_waits_its_delay_and_keeps_the_error(session_factory: SessionFactory) -> None:
    cid = await _claimed(session_factory)
    claimed = await load(session_factory, cid)
    assert await _settle(session_factory, cid, Outcome.retry("busy", "503", delay_seconds=60))
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.error_code, row.error_message) == (
        "pending",
        1,
        "busy",
        "503",
    )
    assert row.lease_expires_at is None
    assert row.completed_at is None
    assert row.next_attempt_at is not None
    # now() + 60 s, with now() the settle's transaction time, after the claim's.
    assert claimed.updated_at + timedelta(seconds=60) <= row.next_attempt_at
    assert row.next_attempt_at == row.updated_at + timedelta(seconds=60)


async def test_a_completion_clears_an_earlier_error(session_factory: SessionFactory) -> None:
    cid = await _claimed(session_factory)
    await set_columns(session_factory, cid, error_code="busy", error_message="503")
    done = Outcome.completed(
        text="ok",
        input_tokens=1,
        output_tokens=2,
        latency_ms=3.0,
        finish_reason="stop",
        prompt_version="v1",
    )
    assert await _settle(session_factory, cid, done)
    row = await load(session_factory, cid)
    assert (row.status, row.response, row.error_code, row.error_message) == (
        "completed",
        "ok",
        None,
        None,
    )
    assert (row.input_tokens, row.output_tokens, row.total_tokens, row.latency_ms) == (1, 2, 3, 3.0)
    assert (row.finish_reason, row.prompt_version) == ("stop", "v1")
    assert row.completed_at == row.updated_at
    assert row.lease_expires_at is None


async def test_a_failure_is_finished_with_its_reason(session_factory: SessionFactory) -> None:
    cid = await _claimed(session_factory)
    assert await _settle(session_factory, cid, Outcome.failed("llm_bad_request", "400"))
    row = await load(session_factory, cid)
    assert (row.status, row.error_code, row.error_message, row.response) == (
        "failed",
        "llm_bad_request",
        "400",
        None,
    )
    assert row.completed_at == row.updated_at


async def test_a_cancel_ends_only_an_unfinished_active_row_of_its_owner(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    owner = (await load(session_factory, cid)).user_id
    async with unit_of_work(session_factory) as session:
        repo = ConversationRepository(session)
        assert not await repo.settle(cid, Outcome.cancelled(), owner_id=uuid.uuid4())
        assert await repo.settle(cid, Outcome.cancelled(), owner_id=owner)
        # Finished now: a second cancel changes nothing.
        assert not await repo.settle(cid, Outcome.cancelled(), owner_id=owner)
    row = await load(session_factory, cid)
    assert row.status == "cancelled"
    assert row.completed_at is not None
    gone = await make_conversation(session_factory)
    await set_columns(session_factory, gone, is_active=False)
    async with unit_of_work(session_factory) as session:
        assert not await ConversationRepository(session).settle(gone, Outcome.cancelled())


async def test_a_worker_stopped_mid_call_hands_the_row_back(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    """Shutdown cancels the job while the model is still answering: the row goes back to
    pending with the attempt unspent, so the next worker starts it as attempt 1 again."""
    fake_llm.configure(hold=True)
    cid = await make_conversation(session_factory)
    with captured_logging("worker") as logs:
        task = asyncio.create_task(run_generation(res, cid))
        async with asyncio.timeout(10):
            while fake_llm.stats().generation_calls < 1:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(r["level"], r["extra"]) for r in logs.find("generation_handed_back")] == [
        ("WARNING", {"reason": "worker_shutdown", "attempt": "1"})
    ]
    fake_llm.configure(hold=False)
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.lease_expires_at) == ("pending", 0, None)


async def test_a_soft_delete_is_scoped_to_the_owner_and_done_once(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    before = await load(session_factory, cid)
    async with unit_of_work(session_factory) as session:
        repo = ConversationRepository(session)
        assert not await repo.soft_delete(cid, owner_id=uuid.uuid4())
        assert await repo.soft_delete(cid, owner_id=before.user_id)
        assert not await repo.soft_delete(cid, owner_id=None)
    async with session_factory() as session:
        row = await session.get(Conversation, cid)
    assert row is not None
    assert row.is_active is False
    assert row.updated_at > before.updated_at
    other = await make_conversation(session_factory)
    async with unit_of_work(session_factory) as session:
        assert await ConversationRepository(session).soft_delete(other, owner_id=None)


async def test_a_soft_delete_hides_only_the_conversation_named(
    session_factory: SessionFactory,
) -> None:
    first, second = [await make_conversation(session_factory) for _ in range(2)]
    owner = (await load(session_factory, first)).user_id
    await set_columns(session_factory, second, user_id=owner)
    async with unit_of_work(session_factory) as session:
        assert await ConversationRepository(session).soft_delete(first, owner_id=owner)
    async with session_factory() as session:
        rows = {cid: await session.get(Conversation, cid) for cid in (first, second)}
    assert {cid: row.is_active for cid, row in rows.items() if row is not None} == {
        first: False,
        second: True,
    }


async def test_due_pending_rows_come_oldest_first_within_the_limit(
    session_factory: SessionFactory,
) -> None:
    oldest, older, fresh, deleted, running = [
        await make_conversation(session_factory) for _ in range(5)
    ]
    now = datetime.now(UTC)
    await set_columns(session_factory, oldest, updated_at=now - timedelta(hours=3))
    # A retry is due when its next attempt is, however old its last update.
    await set_columns(
        session_factory,
        older,
        updated_at=now - timedelta(hours=5),
        next_attempt_at=now - timedelta(hours=2),
    )
    await set_columns(session_factory, deleted, updated_at=LONG_AGO, is_active=False)
    await set_columns(session_factory, running, updated_at=LONG_AGO, status="running")
    async with session_factory() as session:
        repo = ConversationRepository(session)
        assert await repo.due_pending_ids(older_than_seconds=60, limit=10) == [oldest, older]
        assert await repo.due_pending_ids(older_than_seconds=60, limit=1) == [oldest]
        everything = await repo.due_pending_ids(older_than_seconds=-3600, limit=10)
    assert everything == [oldest, older, fresh]


async def test_due_pending_rows_come_in_due_order_not_in_creation_order(
    session_factory: SessionFactory,
) -> None:
    ids = [await make_conversation(session_factory) for _ in range(3)]
    now = datetime.now(UTC)
    # The last created is the most overdue, the first created the least.
    for hours, cid in enumerate(ids, start=1):
        await set_columns(session_factory, cid, updated_at=now - timedelta(hours=hours))
    async with session_factory() as session:
        repo = ConversationRepository(session)
        assert await repo.due_pending_ids(older_than_seconds=60, limit=10) == ids[::-1]
        assert await repo.due_pending_ids(older_than_seconds=60, limit=2) == ids[:0:-1]


async def test_the_grace_and_lease_boundaries_are_strict(session_factory: SessionFactory) -> None:
    """A row exactly at the end of its grace period is not due yet, and a lease ending at
    this very instant has not expired: the sweeper's reclaim and the claim agree. Checked in
    one transaction, whose `now()` does not move."""
    pending, running = [await make_conversation(session_factory) for _ in range(2)]
    async with unit_of_work(session_factory) as session:
        repo = ConversationRepository(session)
        grace = timedelta(seconds=60)
        await session.execute(
            update(Conversation)
            .where(Conversation.id == pending)
            .values(updated_at=func.now() - grace)
        )
        await session.execute(
            update(Conversation)
            .where(Conversation.id == running)
            .values(status="running", attempts=1, lease_expires_at=func.now())
        )
        assert await repo.due_pending_ids(older_than_seconds=60, limit=10) == []
        assert await repo.reclaim_expired_leases(max_attempts=3, limit=10) == []
        assert await repo.claim(running, lease_seconds=30) is None
        a_tick = timedelta(microseconds=1)
        await session.execute(
            update(Conversation)
            .where(Conversation.id == pending)
            .values(updated_at=func.now() - grace - a_tick)
        )
        await session.execute(
            update(Conversation)
            .where(Conversation.id == running)
            .values(lease_expires_at=func.now() - a_tick)
        )
        assert await repo.due_pending_ids(older_than_seconds=60, limit=10) == [pending]
        assert await repo.reclaim_expired_leases(max_attempts=3, limit=10) == [running]


async def test_a_later_attempt_keeps_the_first_start_and_queue_wait_and_spends_its_retry_time(
    session_factory: SessionFactory,
) -> None:
    cid = await _claimed(session_factory)
    first = await load(session_factory, cid)
    # Its lease ran out while a retry was scheduled: the next claim starts attempt 2.
    await set_columns(
        session_factory,
        cid,
        lease_expires_at=datetime.now(UTC) - timedelta(seconds=1),
        next_attempt_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    async with unit_of_work(session_factory) as session:
        second = await ConversationRepository(session).claim(cid, lease_seconds=30)
    assert second is not None
    assert second.attempts == 2
    assert (second.started_at, second.queue_wait_ms) == (first.started_at, first.queue_wait_ms)
    assert second.next_attempt_at is None


async def test_a_deleted_pending_conversation_is_not_claimed(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    await set_columns(session_factory, cid, is_active=False)
    async with unit_of_work(session_factory) as session:
        assert await ConversationRepository(session).claim(cid, lease_seconds=30) is None
    assert (await load_any(session_factory, cid)).attempts == 0


async def test_get_owned_gives_the_row_to_its_owner_or_to_no_owner_only(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    owner = (await load(session_factory, cid)).user_id
    async with session_factory() as session:
        repo = ConversationRepository(session)
        assert await repo.get_owned(cid, uuid.uuid4()) is None
        mine = await repo.get_owned(cid, owner)
        anyones = await repo.get_owned(cid, None)
        assert await repo.get_owned(uuid.uuid4(), owner) is None
    assert mine is not None
    assert anyones is not None
    assert mine.id == anyones.id == cid


async def test_get_owned_for_update_locks_the_row_until_the_transaction_ends(
    session_factory: SessionFactory, database_url: URL
) -> None:
    cid = await make_conversation(session_factory)
    dsn = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    other = await asyncpg.connect(dsn)
    lock = "SELECT id FROM conversation WHERE id = $1 FOR UPDATE NOWAIT"
    try:
        async with session_factory() as session, session.begin():
            repo = ConversationRepository(session)
            assert await repo.get_owned(cid, None, for_update=True) is not None
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.fetchval(lock, cid)
        async with session_factory() as session, session.begin():
            # A plain read takes no lock.
            assert await ConversationRepository(session).get_owned(cid, None) is not None
            assert await other.fetchval(lock, cid) == cid
    finally:
        await other.close()


async def test_the_oldest_pending_age_is_that_of_the_oldest_active_pending_row(
    session_factory: SessionFactory,
) -> None:
    async with session_factory() as session:
        assert await ConversationRepository(session).oldest_pending_age() is None
    pending, deleted, running, done = [await make_conversation(session_factory) for _ in range(4)]
    await set_columns(session_factory, pending, created_at=datetime.now(UTC) - timedelta(hours=1))
    # Far older than the pending row: had any of them counted, the age would say so.
    ancient = datetime.now(UTC) - timedelta(days=30)
    await set_columns(session_factory, deleted, is_active=False, created_at=ancient)
    await set_columns(session_factory, running, status="running", created_at=ancient)
    await set_columns(session_factory, done, status="completed", created_at=ancient)
    async with session_factory() as session:
        age = await ConversationRepository(session).oldest_pending_age()
    assert age is not None
    assert 3600 <= age < 7200  # the pending row's hour, not the month of the others
