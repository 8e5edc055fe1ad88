"""Workers that die without a word: SIGKILL mid-generation, and a job that kills every worker."""

from __future__ import annotations

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
    # Held: the first call is still unanswered when its worker dies, however slow the machine.
    fake_llm.configure(hold=True)
    stack = make_stack(workers=1, **QUICK_LEASE)
    cid = stack.submit("killed mid-generation")
    wait_for_calls(fake_llm, "killed mid-generation", 1)
    held = stack.db.rows([cid])[cid]
    assert (held.status, held.attempts) == ("running", 1)
    lease_end = held.lease_expires_at
    assert lease_end is not None
    stack.workers[0].kill()
    fake_llm.configure(hold=False)
    successor = stack.add_worker()
    row = stack.settle([cid], timeout=30)[cid]
    assert row.status == "completed"
    # The lost attempt counts; its call died with the worker, so two calls were unavoidable.
    assert row.attempts == 2
    assert fake_llm.stats().calls_for("killed mid-generation") == 2
    # Taken back by the first sweep that began after the lease ran out, not before it and
    # not later: no sweep started after the expiry without reclaiming it.
    (reclaim,) = [e for e in successor.events("sweep_done") if e.extra["reclaimed"]]
    assert reclaim.extra["reclaimed"] == 1
    assert lease_end < reclaim.at
    ticks = [e.at for e in successor.events() if e.message.strip().endswith("→ sweep()")]
    reclaiming_tick = max(at for at in ticks if at < reclaim.at)
    assert [at for at in ticks if lease_end < at < reclaiming_tick] == []
    (second,) = [
        e
        for e in successor.events("generation_started")
        if e.conversation_id == cid and e.extra["attempt"] == "2"
    ]
    (released,) = successor.events("leases_reclaimed")
    assert released.extra["count"] == 1
    assert released.at < second.at


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
