"""Workers that die without a word: SIGKILL mid-generation, and a job that kills every worker."""

from __future__ import annotations

import time

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import MakeStack, wait_for_calls

pytestmark = pytest.mark.fault

# Short but nested as settings demand: one LLM call < one job < one lease.
QUICK_LEASE = {
    "OLLAMA_TIMEOUT_SECONDS": "3",
    "WORKER_JOB_TIMEOUT_SECONDS": "4",
    "WORKER_LEASE_SECONDS": "5",
}


def test_a_generation_killed_with_its_worker_is_finished_by_another_after_the_lease(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=1.5)
    stack = make_stack(workers=1, **QUICK_LEASE)
    cid = stack.submit("killed mid-generation")
    wait_for_calls(fake_llm, "killed mid-generation", 1)
    killed_at = time.monotonic()
    stack.workers[0].kill()
    stack.add_worker()
    row = stack.settle([cid], timeout=25)[cid]
    assert row.status == "completed"
    # The lost attempt counts; its call died with the worker, so two calls were unavoidable.
    assert row.attempts == 2
    assert fake_llm.stats().calls_for("killed mid-generation") == 2
    # Not taken back before the lease ran out, and not long after it either.
    assert 5 <= time.monotonic() - killed_at < 15


def test_a_job_that_kills_every_worker_fails_once_its_attempts_are_spent(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    # Each attempt is cut short by SIGKILL the moment it reaches the model, as a poison
    # payload would crash the process; the answer would take far longer than that anyway.
    fake_llm.configure(mode="slow", delay_seconds=10)
    stack = make_stack(
        workers=1,
        OLLAMA_TIMEOUT_SECONDS="2",
        WORKER_JOB_TIMEOUT_SECONDS="2.5",
        WORKER_LEASE_SECONDS="3",
        WORKER_MAX_ATTEMPTS="3",
    )
    cid = stack.submit("poison")
    for attempt in (1, 2, 3):
        wait_for_calls(fake_llm, "poison", attempt)
        stack.workers[-1].kill()
        stack.add_worker()
    row = stack.settle([cid], timeout=15)[cid]
    assert row.status == "failed"
    assert row.error_code == "max_attempts_exceeded"
    assert row.attempts == 3
    assert fake_llm.stats().calls_for("poison") == 3
    # The queue is not wedged behind it: the survivor answers the next conversation.
    fake_llm.configure(mode="ok", delay_seconds=0)
    after = stack.submit("after the poison")
    assert stack.settle([after], timeout=10)[after].status == "completed"
