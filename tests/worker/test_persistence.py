"""Writing an attempt's outcome when the database drops the connection around the write.

The write-back is one statement that commits on its own; the connection is cut on purpose
around it: after the server ran it (the reply is lost in flight) or before it could (nothing
was written). Either way the worker must end up with exactly one written outcome and one call
to the model.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from shared.db import DatabaseUnavailableError, SessionFactory, is_db_unavailable, unit_of_work
from shared.lifecycle import Outcome
from shared.models import ConversationStatus
from shared.repositories import attempt_statements
from shared.repositories.conversations import ConversationRepository
from tests.factories import load, make_conversation, set_columns
from tests.support.fake_llm import FakeLLMServer
from tests.support.log_capture import captured_logging
from worker import persistence
from worker.context import WorkerResources
from worker.generation import JobResult, run_generation
from worker.persistence import WRITE_TRIES, write_outcome

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)


def _cut() -> OperationalError:
    """What asyncpg's dropped socket looks like once SQLAlchemy has wrapped it."""
    return OperationalError(
        "COMMIT",
        None,
        ConnectionResetError("connection reset by peer"),
        connection_invalidated=True,
    )


class _Cuts:
    """Write-backs whose connection is cut, and when: `after` the server ran the statement,
    or before."""

    def __init__(self, *, after: bool, when: Callable[[], bool], times: int = 1) -> None:
        self.after = after
        self.when = when
        self.left = times
        self.done = 0

    def due(self) -> bool:
        return self.left > 0 and self.when()

    def fire(self) -> None:
        self.left -= 1
        self.done += 1
        # What the driver raises when the socket goes: the connection is dropped from the pool.
        raise ConnectionResetError("connection reset by peer")


def _cutting(monkeypatch: pytest.MonkeyPatch, cuts: _Cuts) -> None:
    real_settle = attempt_statements.settle

    async def settle(*args: Any, **kwargs: Any) -> bool:
        if not cuts.after and cuts.due():
            cuts.fire()
        written = await real_settle(*args, **kwargs)
        if cuts.after and cuts.due():
            cuts.fire()
        return written

    monkeypatch.setattr(attempt_statements, "settle", settle)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-off sleeps of `write_outcome`, recorded instead of slept."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        recorded.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(persistence.asyncio, "sleep", record)
    return recorded


async def test_a_write_back_whose_commit_acknowledgement_is_lost_is_resolved_by_has_outcome(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write reached the server and the answer is stored, but the connection died before the
    reply: the retry's fenced write finds the row already completed, and `has_outcome` tells
    that apart from a lost lease. The model is not asked again."""
    cid = await make_conversation(session_factory, prompt="answer once")
    cuts = _Cuts(after=True, when=lambda: fake_llm.stats().generation_calls == 1)
    _cutting(monkeypatch, cuts)
    assert await run_generation(res, cid) is JobResult.COMPLETED
    assert cuts.done == 1
    assert sleeps == [0.2]
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.response) == ("completed", 1, "echo: answer once")
    assert fake_llm.stats().generation_calls == 1


async def test_a_write_back_cut_before_it_ran_is_written_by_the_retry(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = await make_conversation(session_factory, prompt="written on the retry")
    cuts = _Cuts(after=False, when=lambda: fake_llm.stats().generation_calls == 1, times=2)
    _cutting(monkeypatch, cuts)
    assert await run_generation(res, cid) is JobResult.COMPLETED
    assert cuts.done == 2
    assert sleeps == [0.2, 0.4]
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.response) == (
        "completed",
        1,
        "echo: written on the retry",
    )
    assert fake_llm.stats().generation_calls == 1


async def test_a_lost_acknowledgement_does_not_hide_a_lost_lease(
    res: WorkerResources, session_factory: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write never landed and, while the worker waited to retry, its lease ran out and
    attempt 2 completed the row: the retry's write is refused, and `has_outcome` (the same
    status, but another attempt's) must not call attempt 1's outcome written."""
    cid = await make_conversation(session_factory)
    async with unit_of_work(session_factory) as session:
        assert await ConversationRepository(session).claim(cid, lease_seconds=30) is not None
    waits: list[float] = []

    async def taken_over_meanwhile(delay: float) -> None:
        waits.append(delay)
        await set_columns(session_factory, cid, lease_expires_at=LONG_AGO)
        async with unit_of_work(session_factory) as session:
            repo = ConversationRepository(session)
            assert await repo.claim(cid, lease_seconds=30) is not None
            assert await repo.settle(cid, _done("attempt 2"), attempt=2)

    monkeypatch.setattr(persistence.asyncio, "sleep", taken_over_meanwhile)
    _cutting(monkeypatch, _Cuts(after=False, when=lambda: True))
    written = await write_outcome(res, cid, attempt=1, outcome=_done("late"))
    assert written is False
    assert waits == [0.2]
    row = await load(session_factory, cid)
    assert (row.status, row.attempts, row.response) == ("completed", 2, "attempt 2")


def _done(text: str) -> Outcome:
    return Outcome.completed(
        text=text,
        input_tokens=1,
        output_tokens=1,
        latency_ms=1.0,
        finish_reason="stop",
        prompt_version="v1",
    )


async def test_a_database_that_stays_away_ends_the_write_after_its_tries(
    res: WorkerResources,
    session_factory: SessionFactory,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = await make_conversation(session_factory)
    async with unit_of_work(session_factory) as session:
        assert await ConversationRepository(session).claim(cid, lease_seconds=30) is not None
    cuts = _Cuts(after=False, when=lambda: True, times=WRITE_TRIES + 1)
    _cutting(monkeypatch, cuts)
    with captured_logging("worker") as logs, pytest.raises(DatabaseUnavailableError):
        await write_outcome(res, cid, attempt=1, outcome=_done("never"))
    assert cuts.done == WRITE_TRIES == 6
    # Each lost try is a warning saying what broke and how many tries are left.
    assert [(r["level"], r["extra"]) for r in logs.find("outcome_write_retry")] == [
        ("WARNING", {"error": "DatabaseUnavailableError", "tries_left": left})
        for left in (5, 4, 3, 2, 1)
    ]
    # Doubling from 0.2 s, capped at 3 s, and no sleep after the last try.
    assert sleeps == [0.2, 0.4, 0.8, 1.6, 3.0]
    assert (await load(session_factory, cid)).status == ConversationStatus.RUNNING


async def test_an_error_that_is_not_a_lost_connection_is_not_retried(
    res: WorkerResources,
    session_factory: SessionFactory,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = await make_conversation(session_factory)
    calls: list[uuid.UUID] = []

    async def refused(db: object, conversation_id: uuid.UUID, *args: object, **kw: object) -> bool:
        calls.append(conversation_id)
        raise asyncpg.PostgresSyntaxError("a bug in the statement")

    monkeypatch.setattr(attempt_statements, "settle", refused)
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await write_outcome(res, cid, attempt=1, outcome=_done("x"))
    assert calls == [cid]
    assert sleeps == []


async def test_a_write_that_finds_the_row_taken_reports_it_without_retrying(
    res: WorkerResources, session_factory: SessionFactory, sleeps: list[float]
) -> None:
    """No connection was lost: a refused fenced write means the row is not this attempt's
    to end, even when it holds an outcome like this one (asking `has_outcome` is only for
    a commit whose reply was lost)."""
    cid = await make_conversation(session_factory)
    assert await write_outcome(res, cid, attempt=1, outcome=_done("not claimed")) is False
    assert (await load(session_factory, cid)).status == ConversationStatus.PENDING
    async with unit_of_work(session_factory) as session:
        repo = ConversationRepository(session)
        assert await repo.claim(cid, lease_seconds=30) is not None
        assert await repo.settle(cid, _done("first"), attempt=1)
    assert await write_outcome(res, cid, attempt=1, outcome=_done("second")) is False
    assert (await load(session_factory, cid)).response == "first"
    assert sleeps == []


async def test_has_outcome_names_one_attempt_and_one_status(
    session_factory: SessionFactory,
) -> None:
    cid = await make_conversation(session_factory)
    other = await make_conversation(session_factory)
    async with unit_of_work(session_factory) as session:
        repo = ConversationRepository(session)
        for conversation_id in (cid, other):
            assert await repo.claim(conversation_id, lease_seconds=30) is not None
        assert await repo.settle(cid, _done("stored"), attempt=1)
    async with session_factory() as session:
        repo = ConversationRepository(session)
        assert await repo.has_outcome(cid, attempt=1, status=ConversationStatus.COMPLETED)
        assert not await repo.has_outcome(cid, attempt=2, status=ConversationStatus.COMPLETED)
        assert not await repo.has_outcome(cid, attempt=1, status=ConversationStatus.FAILED)
        assert not await repo.has_outcome(other, attempt=1, status=ConversationStatus.COMPLETED)
        assert await repo.has_outcome(other, attempt=1, status=ConversationStatus.RUNNING)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(_cut(), id="operational"),
        pytest.param(InterfaceError("SELECT 1", None, OSError("closed")), id="interface"),
        pytest.param(
            DBAPIError("SELECT 1", None, Exception("gone"), connection_invalidated=True),
            id="invalidated-dbapi",
        ),
        pytest.param(ConnectionRefusedError(111, "refused"), id="refused"),
        pytest.param(ConnectionResetError(104, "reset"), id="reset"),
        pytest.param(TimeoutError(), id="timeout"),
    ],
)
def test_lost_connections_are_connection_errors(error: BaseException) -> None:
    assert is_db_unavailable(error) is True


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(IntegrityError("INSERT", None, Exception("duplicate key")), id="integrity"),
        pytest.param(ProgrammingError("SELEC", None, Exception("syntax")), id="programming"),
        pytest.param(DBAPIError("SELECT 1", None, Exception("other")), id="valid-dbapi"),
        pytest.param(ValueError("a bug"), id="value"),
        pytest.param(OSError("disk full"), id="os-not-connection"),
    ],
)
def test_other_errors_are_not_connection_errors(error: BaseException) -> None:
    assert is_db_unavailable(error) is False
