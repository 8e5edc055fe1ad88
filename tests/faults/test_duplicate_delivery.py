"""The same job delivered more than once: the claim in PostgreSQL lets one generation through."""

from __future__ import annotations

import asyncio

import pytest

from shared.job_contract import GENERATE_CONVERSATION, generation_job_id
from shared.queue import create_queue_pool
from shared.settings import Settings
from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import FaultStack
from tests.support.processes import wait_until

pytestmark = pytest.mark.fault

# A short lease: a copy that finds the row leased comes back when the lease would end.
SHORT_LEASE = {
    "OLLAMA_TIMEOUT_SECONDS": "2",
    "WORKER_JOB_TIMEOUT_SECONDS": "3",
    "WORKER_LEASE_SECONDS": "4",
}


@pytest.fixture(scope="module")
def shared_stack_env() -> dict[str, str]:
    return SHORT_LEASE


def _deliver(stack: FaultStack, cid: str, job_ids: list[str]) -> list[bool]:
    """Enqueue a generation job for `cid` under each id, as arq itself would; True if queued."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        REDIS_URL=stack.env["REDIS_URL"],
        QUEUE_NAME=stack.env["QUEUE_NAME"],
    )

    async def deliver() -> list[bool]:
        pool = create_queue_pool(settings)
        try:
            return [
                await pool.enqueue_job(GENERATE_CONVERSATION, cid, {}, _job_id=job_id) is not None
                for job_id in job_ids
            ]
        finally:
            await pool.aclose()

    return asyncio.run(deliver())


def _skips(stack: FaultStack, cid: str) -> int:
    return sum(
        1
        for worker in stack.workers
        for line in worker.log().splitlines()
        if "job_skipped" in line and cid in line
    )


def _drained(stack: FaultStack) -> None:
    wait_until(lambda: stack.queued_generations() == 0, timeout=15, what="every copy to run")


def test_a_job_delivered_again_after_the_answer_is_stored_is_skipped(
    shared_stack: FaultStack, fake_llm: FakeLLMServer
) -> None:
    cid = shared_stack.submit("delivered twice, one after the other")
    assert shared_stack.settle([cid], timeout=10)[cid].status == "completed"
    _drained(shared_stack)
    # The finished job's own id is free again (no results kept), and a stray copy has another.
    assert _deliver(shared_stack, cid, [generation_job_id(cid), f"stray:{cid}"]) == [True, True]
    _drained(shared_stack)
    wait_until(lambda: _skips(shared_stack, cid) == 2, timeout=5, what="both copies to be skipped")
    row = shared_stack.db.rows([cid])[cid]
    assert row.status == "completed"
    assert row.attempts == 1
    assert fake_llm.stats().calls_for("delivered twice, one after the other") == 1


def test_copies_delivered_while_the_first_is_generating_generate_nothing(
    shared_stack: FaultStack, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=1)
    cid = shared_stack.submit("delivered four times at once")
    # The same id again is refused by arq; other ids get through and race for the row.
    copies = [generation_job_id(cid), *(f"copy{i}:{cid}" for i in range(3))]
    assert _deliver(shared_stack, cid, copies) == [False, True, True, True]
    row = shared_stack.settle([cid], timeout=10)[cid]
    assert row.status == "completed"
    # The copies that found the row leased come back after the lease, then skip it.
    _drained(shared_stack)
    wait_until(lambda: _skips(shared_stack, cid) == 3, timeout=5, what="every copy to be skipped")
    row = shared_stack.db.rows([cid])[cid]
    assert row.status == "completed"
    assert row.attempts == 1
    assert fake_llm.stats().calls_for("delivered four times at once") == 1
