"""SIGTERM, as Kubernetes and compose send it: finish within the grace period, or hand back."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import FaultStack, MakeStack, wait_for_calls
from tests.support.log_capture import LogEvent
from tests.support.processes import Process, wait_until

pytestmark = pytest.mark.fault


def _holder(stack: FaultStack, cid: str) -> Process:
    """The worker whose log says it started generating `cid`."""

    def started(worker: Process) -> bool:
        return any(e.conversation_id == cid for e in worker.events("generation_started"))

    wait_until(lambda: any(started(w) for w in stack.workers), timeout=10, what="a holder")
    return next(w for w in stack.workers if started(w))


def _terminate(worker: Process) -> LogEvent:
    """SIGTERM; returns arq's line saying it stopped taking jobs (the signal was handled)."""
    worker.signal(signal.SIGTERM)

    def noted() -> list[LogEvent]:
        return [e for e in worker.events() if e.message.startswith("shutdown on SIGTERM ◆")]

    wait_until(noted, timeout=15, what="the worker to handle SIGTERM")
    return noted()[0]


def _exit_code(worker: Process) -> int:
    """The worker's exit status; the timeout is only a safety net."""
    return worker.popen.wait(timeout=30)


def _wait_complete(worker: Process) -> LogEvent:
    """arq's line saying the grace period's wait is over, and how many jobs it cancels."""
    (line,) = [e for e in worker.events() if e.message.startswith("shutdown on SIGTERM, wait")]
    return line


def _one(worker: Process, message: str, cid: str) -> LogEvent:
    (event,) = [e for e in worker.events(message) if e.conversation_id == cid]
    return event


def test_sigterm_lets_a_generation_shorter_than_the_grace_period_finish(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    # Held until the worker has taken the signal: the generation is in flight through it.
    fake_llm.configure(hold=True)
    stack = make_stack(workers=1, WORKER_SHUTDOWN_GRACE_SECONDS="30")
    worker = stack.workers[0]
    cid = stack.submit("finish before leaving")
    wait_for_calls(fake_llm, "finish before leaving", 1)
    noted = _terminate(worker)
    fake_llm.release(1)
    assert _exit_code(worker) == 0
    # The answer was written after the signal, and the worker left once it was: the wait
    # ended with nothing left to cancel, long before the grace period would have.
    completed = _one(worker, "generation_completed", cid)
    wait_complete = _wait_complete(worker)
    (stopped,) = worker.events("worker_stopped")
    assert noted.at < completed.at < wait_complete.at < stopped.at
    assert wait_complete.message.endswith("◆ 0 ongoing to cancel")
    assert worker.events("generation_handed_back") == []
    # Written by the departing worker itself: no other worker was there to do it.
    row = stack.db.rows([cid])[cid]
    assert row.status == "completed"
    assert row.attempts == 1
    assert fake_llm.stats().calls_for("finish before leaving") == 1


def test_sigterm_hands_a_longer_generation_back_without_spending_an_attempt(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    # Held for good: the generation cannot end within the grace period, whatever the machine.
    fake_llm.configure(hold=True)
    grace = 1
    stack = make_stack(
        workers=2,
        OLLAMA_TIMEOUT_SECONDS="5",
        WORKER_JOB_TIMEOUT_SECONDS="6",
        WORKER_LEASE_SECONDS="8",
        WORKER_SHUTDOWN_GRACE_SECONDS=str(grace),
    )
    cid = stack.submit("outlives the grace period")
    wait_for_calls(fake_llm, "outlives the grace period", 1)
    lease_end = stack.db.rows([cid])[cid].lease_expires_at
    assert lease_end is not None
    holder = _holder(stack, cid)
    noted = _terminate(holder)
    assert _exit_code(holder) == 0
    # The grace period ran out, the call was cancelled and the row handed back, then it left.
    wait_complete = _wait_complete(holder)
    handed_back = _one(holder, "generation_handed_back", cid)
    (stopped,) = holder.events("worker_stopped")
    assert wait_complete.message.endswith("◆ 1 ongoing to cancel")
    assert noted.at + timedelta(seconds=grace) <= wait_complete.at < handed_back.at < stopped.at
    fake_llm.configure(hold=False)
    row = stack.settle([cid], timeout=30)[cid]
    assert row.status == "completed"
    assert row.attempts == 1
    # The other worker took it at once, not once the holder's lease had run out.
    (other,) = [w for w in stack.workers if w is not holder]
    assert _one(other, "generation_started", cid).at < lease_end
    assert _one(other, "generation_completed", cid).extra["attempt"] == "1"
    # The abandoned call could not be saved: the generation outlived the grace period.
    assert fake_llm.stats().calls_for("outlives the grace period") == 2
