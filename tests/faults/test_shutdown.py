"""SIGTERM, as Kubernetes and compose send it: finish within the grace period, or hand back."""

from __future__ import annotations

import time

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import FaultStack, MakeStack, wait_for_calls
from tests.support.processes import Process, wait_until

pytestmark = pytest.mark.fault


def _holder(stack: FaultStack, cid: str) -> Process:
    """The worker whose log says it started generating `cid`."""

    def started(worker: Process) -> bool:
        return any(
            "generation_started" in line and cid in line for line in worker.log().splitlines()
        )

    wait_until(lambda: any(started(w) for w in stack.workers), timeout=10, what="a holder")
    return next(w for w in stack.workers if started(w))


def _terminate(worker: Process) -> tuple[int | None, float]:
    """SIGTERM and wait; the exit code and how long the worker took to go."""
    began = time.monotonic()
    code = worker.stop(timeout=20)
    return code, time.monotonic() - began


def test_sigterm_lets_a_generation_shorter_than_the_grace_period_finish(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=1.5)
    stack = make_stack(workers=1, WORKER_SHUTDOWN_GRACE_SECONDS="5")
    cid = stack.submit("finish before leaving")
    wait_for_calls(fake_llm, "finish before leaving", 1)
    code, took = _terminate(stack.workers[0])
    assert code == 0
    assert took < 5
    # Written by the departing worker itself: no other worker was there to do it.
    row = stack.db.rows([cid])[cid]
    assert row.status == "completed"
    assert row.attempts == 1
    assert fake_llm.stats().calls_for("finish before leaving") == 1


def test_sigterm_hands_a_longer_generation_back_without_spending_an_attempt(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=3)
    stack = make_stack(
        workers=2,
        OLLAMA_TIMEOUT_SECONDS="5",
        WORKER_JOB_TIMEOUT_SECONDS="6",
        WORKER_LEASE_SECONDS="8",
        WORKER_SHUTDOWN_GRACE_SECONDS="1",
    )
    cid = stack.submit("outlives the grace period")
    wait_for_calls(fake_llm, "outlives the grace period", 1)
    holder = _holder(stack, cid)
    code, took = _terminate(holder)
    assert code == 0
    assert took < 6
    assert "generation_handed_back" in holder.log()
    # The other worker takes it at once, not after the 8 s lease.
    row = stack.settle([cid], timeout=8)[cid]
    assert row.status == "completed"
    assert row.attempts == 1
    # The abandoned call could not be saved: the generation outlived the grace period.
    assert fake_llm.stats().calls_for("outlives the grace period") == 2
