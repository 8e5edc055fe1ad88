"""The worker's claim and write-back on the driver (shared/repositories/attempt_statements.py):
the same rows as the repository's ORM forms, and the same fences."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import SessionFactory, driver_connection, unit_of_work
from shared.lifecycle import Outcome
from shared.models import Conversation, ConversationStatus
from shared.repositories import attempt_statements
from shared.repositories.attempt_statements import ClaimRefused
from shared.repositories.conversations import ConversationRepository
from tests.factories import load, make_conversation, set_columns

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)
# Set by `now()` of the statement that wrote them: compared by how they relate, not by value.
_TIMES = ("created_at", "updated_at", "started_at", "completed_at", "lease_expires_at")
_TIMES += ("next_attempt_at",)
_OTHERS = ("id", "user_id", "model_version_id", "queue_wait_ms")


def _engine(session_factory: SessionFactory) -> AsyncEngine:
    engine: AsyncEngine = session_factory.kw["bind"]
    return engine


async def _driver_claim(
    session_factory: SessionFactory, cid: uuid.UUID, lease_seconds: float = 30
) -> Any:
    async with driver_connection(_engine(session_factory)) as db:
        return await attempt_statements.claim(db, cid, lease_seconds=lease_seconds)


async def _orm_claim(session_factory: SessionFactory, cid: uuid.UUID) -> None:
    async with unit_of_work(session_factory) as session:
        assert await ConversationRepository(session).claim(cid, lease_seconds=30) is not None


async def _driver_settle(
    session_factory: SessionFactory, cid: uuid.UUID, outcome: Outcome, attempt: int = 1
) -> bool:
    async with driver_connection(_engine(session_factory)) as db:
        return await attempt_statements.settle(db, cid, outcome, attempt=attempt)


async def _orm_settle(session_factory: SessionFactory, cid: uuid.UUID, outcome: Outcome) -> None:
    async with unit_of_work(session_factory) as session:
        assert await ConversationRepository(session).settle(cid, outcome, attempt=1)


def _shape(row: Conversation) -> dict[str, Any]:
    """Every column, the times as how they relate to `updated_at` (the write's `now()`)."""
    columns = {c.name: getattr(row, c.key) for c in Conversation.__table__.columns}
    shape = {k: v for k, v in columns.items() if k not in _TIMES + _OTHERS}
    for name in _TIMES[3:]:
        value = columns[name]
        shape[name] = None if value is None else value - columns["updated_at"]
    # Set by the claim, an earlier statement than the one compared.
    shape["started_at"] = columns["started_at"] is not None
    shape["queue_wait_ms"] = columns["queue_wait_ms"] is not None
    return shape


async def _pair(session_factory: SessionFactory, **fields: Any) -> tuple[uuid.UUID, uuid.UUID]:
    ids = []
    for _ in range(2):
        cid = await make_conversation(session_factory, prompt="same", **fields)
        ids.append(cid)
    return ids[0], ids[1]


async def test_a_claim_on_the_driver_writes_what_the_repository_claim_writes(
    session_factory: SessionFactory,
) -> None:
    orm, driver = await _pair(session_factory, temperature=0.3, top_p=0.9, max_tokens=50)
    await _orm_claim(session_factory, orm)
    claimed = await _driver_claim(session_factory, driver)
    assert not isinstance(claimed, ClaimRefused)
    conversation, model = claimed
    row = await load(session_factory, driver)
    assert _shape(row) == _shape(await load(session_factory, orm))
    assert (row.status, row.attempts) == ("running", 1)
    assert row.lease_expires_at == row.updated_at + timedelta(seconds=30)
    assert row.started_at == row.updated_at
    assert (conversation.id, conversation.attempts, conversation.queue_wait_ms) == (
        driver,
        1,
        row.queue_wait_ms,
    )
    assert (conversation.prompt, conversation.temperature, conversation.top_p) == ("same", 0.3, 0.9)
    assert (conversation.max_tokens, conversation.model_version_id) == (50, row.model_version_id)
    assert (model.id, model.provider, model.model_name) == (
        row.model_version_id,
        "ollama",
        "llama3.2:3b",
    )


async def _with_error(session_factory: SessionFactory, cid: uuid.UUID) -> None:
    await set_columns(session_factory, cid, error_code="busy", error_message="503")


OUTCOMES = [
    pytest.param(
        Outcome.completed(
            text="ok",
            input_tokens=1,
            output_tokens=2,
            latency_ms=3.5,
            finish_reason="stop",
            prompt_version="v1",
        ),
        id="completed",
    ),
    pytest.param(
        Outcome.completed(
            text="",
            input_tokens=None,
            output_tokens=4,
            latency_ms=1,
            finish_reason=None,
            prompt_version="v1",
        ),
        id="completed-without-counts",
    ),
    pytest.param(Outcome.failed("llm_bad_request", "400"), id="failed"),
    pytest.param(Outcome.retry("busy_again", "429", delay_seconds=7.25), id="retry"),
    pytest.param(Outcome.handed_back(), id="handed-back"),
    pytest.param(Outcome.awaiting_capacity(delay_seconds=0.75), id="awaiting-capacity"),
]


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("earlier_error", [False, True])
async def test_a_write_back_on_the_driver_writes_what_outcome_columns_say(
    session_factory: SessionFactory, outcome: Outcome, earlier_error: bool
) -> None:
    orm, driver = await _pair(session_factory)
    for cid in (orm, driver):
        await _orm_claim(session_factory, cid)
        if earlier_error:
            await _with_error(session_factory, cid)
    await _orm_settle(session_factory, orm, outcome)
    assert await _driver_settle(session_factory, driver, outcome)
    assert _shape(await load(session_factory, driver)) == _shape(await load(session_factory, orm))


async def test_a_write_back_lands_only_while_its_attempt_holds_the_row(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    done = Outcome.failed("x", "y")
    # Not claimed: pending rows are nobody's to end.
    assert not await _driver_settle(session_factory, cid, done)
    assert await _driver_claim(session_factory, cid) is not None
    # Attempt 1 lost its lease and attempt 2 took the row: attempt 1's write changes nothing.
    await set_columns(session_factory, cid, lease_expires_at=LONG_AGO)
    assert not isinstance(await _driver_claim(session_factory, cid), ClaimRefused)
    assert not await _driver_settle(session_factory, cid, done, attempt=1)
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.error_code) == ("running", 2, None)
    assert await _driver_settle(session_factory, cid, done, attempt=2)
    # Ended: not even its own attempt writes again.
    assert not await _driver_settle(session_factory, cid, Outcome.handed_back(), attempt=2)
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.error_code) == ("failed", 2, "x")


async def test_a_claim_takes_a_pending_row_or_an_expired_lease_only(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    first = await _driver_claim(session_factory, cid, lease_seconds=60)
    assert not isinstance(first, ClaimRefused)
    # A live lease: refused, with when it runs out.
    refused = await _driver_claim(session_factory, cid)
    row = await load(session_factory, cid)
    assert refused == ClaimRefused("running", row.lease_expires_at)
    assert row.attempts == 1
    # An expired one: taken, the next attempt number handed out, the first start kept.
    await set_columns(session_factory, cid, lease_expires_at=LONG_AGO)
    second = await _driver_claim(session_factory, cid)
    assert not isinstance(second, ClaimRefused)
    assert second[0].attempts == 2
    assert (await load(session_factory, cid)).started_at == row.started_at
    # Ended: refused with its status.
    await set_columns(session_factory, cid, status="completed", lease_expires_at=None)
    assert await _driver_claim(session_factory, cid) == ClaimRefused("completed", None)


async def test_a_lease_ending_this_very_instant_has_not_expired(
    session_factory: SessionFactory,
) -> None:
    """In one transaction, whose `now()` does not move."""
    cid = await make_conversation(session_factory)
    set_lease = (
        "UPDATE conversation SET status = 'running', lease_expires_at = now() - $2::interval"
    )
    set_lease += " WHERE id = $1"
    async with driver_connection(_engine(session_factory)) as db, db.transaction():
        await db.fetchval(set_lease, cid, timedelta(0))
        refused = await attempt_statements.claim(db, cid, lease_seconds=30)
        assert isinstance(refused, ClaimRefused)
        assert refused.status == "running"
        await db.fetchval(set_lease, cid, timedelta(microseconds=1))
        claimed = await attempt_statements.claim(db, cid, lease_seconds=30)
        assert not isinstance(claimed, ClaimRefused)


async def test_a_deleted_or_missing_conversation_is_not_claimed(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    await set_columns(session_factory, cid, is_active=False)
    assert await _driver_claim(session_factory, cid) == ClaimRefused(None, None)
    assert await _driver_claim(session_factory, uuid.uuid4()) == ClaimRefused(None, None)
    async with session_factory() as session:
        row = await session.get(Conversation, cid)
    assert row is not None
    assert (row.status, row.attempts) == ("pending", 0)


async def test_has_outcome_names_one_attempt_and_one_status(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    await _driver_claim(session_factory, cid)
    assert await _driver_settle(session_factory, cid, Outcome.failed("x", "y"))
    async with driver_connection(_engine(session_factory)) as db:
        has = attempt_statements.has_outcome
        assert await has(db, cid, attempt=1, status=ConversationStatus.FAILED)
        assert not await has(db, cid, attempt=2, status=ConversationStatus.FAILED)
        assert not await has(db, cid, attempt=1, status=ConversationStatus.COMPLETED)


async def test_a_claim_says_whether_the_conversation_has_a_callback(
    session_factory: SessionFactory,
) -> None:
    without, with_callback = await _pair(session_factory)
    await set_columns(session_factory, with_callback, callback_url="https://example.com/hook")
    for cid, expected in ((without, False), (with_callback, True)):
        claimed = await _driver_claim(session_factory, cid)
        assert not isinstance(claimed, ClaimRefused)
        assert claimed[0].has_callback is expected
