"""Which model calls a client's cancel stops in this worker process."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from worker import cancellation
from worker.cancellation import RunningGenerations


async def _model_call() -> None:
    await asyncio.sleep(3600)


async def test_a_cancel_stops_the_running_call_of_that_conversation_only() -> None:
    running = RunningGenerations()
    mine, other = uuid.uuid4(), uuid.uuid4()
    call, other_call = asyncio.ensure_future(_model_call()), asyncio.ensure_future(_model_call())
    with running.running(mine, call), running.running(other, other_call):
        assert running.cancel(mine) is True
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not other_call.done()
        assert running.was_cancelled(mine)
        assert not running.was_cancelled(other)
    other_call.cancel()


async def test_a_cancel_before_the_call_starts_stops_it_as_it_starts() -> None:
    running = RunningGenerations()
    cid = uuid.uuid4()
    assert running.cancel(cid) is False  # nothing running here yet
    call = asyncio.ensure_future(_model_call())
    with running.running(cid, call), pytest.raises(asyncio.CancelledError):
        await call


async def test_a_remembered_cancel_is_forgotten_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(cancellation.time, "monotonic", lambda: clock[0])
    running = RunningGenerations()
    early = uuid.uuid4()
    running.cancel(early)
    clock[0] += cancellation.REMEMBER_SECONDS
    running.cancel(uuid.uuid4())  # any later cancel sweeps out the old ones
    assert not running.was_cancelled(early)
    call = asyncio.ensure_future(_model_call())
    with running.running(early, call):
        await asyncio.sleep(0)
        assert not call.done()
    call.cancel()


async def test_a_finished_call_is_no_longer_running() -> None:
    running = RunningGenerations()
    cid = uuid.uuid4()
    call = asyncio.ensure_future(asyncio.sleep(0))
    with running.running(cid, call):
        await call
    assert running.cancel(cid) is False
