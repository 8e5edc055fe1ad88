"""Jobs that never reach Redis, or vanish with it: PostgreSQL remembers, the sweeper re-sends."""

from __future__ import annotations

import time

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import MakeStack
from tests.support.processes import free_port

pytestmark = pytest.mark.fault


def _answered_once(fake_llm: FakeLLMServer, prompts: list[str]) -> bool:
    stats = fake_llm.stats()
    return all(stats.calls_for(p) == 1 for p in prompts)


def test_jobs_lost_with_an_emptied_redis_are_requeued_by_the_sweeper(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    stack = make_stack(workers=0)
    prompts = [f"queued then forgotten {i}" for i in range(10)]
    ids = [stack.submit(p) for p in prompts]
    assert stack.queued_generations() == 10
    stack.redis.restart_empty()
    assert stack.queued_generations() == 0
    stack.add_worker()
    rows = stack.settle(ids, timeout=20)
    assert {r.status for r in rows.values()} == {"completed"}
    assert {r.attempts for r in rows.values()} == {1}
    assert _answered_once(fake_llm, prompts)


def test_submissions_while_redis_is_down_are_accepted_and_answered_once_it_is_back(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    stack = make_stack(workers=1)
    stack.redis.kill()
    prompts = [f"submitted without redis {i}" for i in range(5)]
    ids = [stack.submit(p) for p in prompts]
    time.sleep(2)  # an outage, not a blip: the worker has to notice and wait it out
    stack.redis.start()
    rows = stack.settle(ids, timeout=25)
    assert {r.status for r in rows.values()} == {"completed"}
    assert _answered_once(fake_llm, prompts)
    assert stack.workers[0].alive
    assert stack.api is not None
    assert stack.api.log().count("enqueue_failed") == 5


def test_a_committed_row_whose_job_was_never_sent_is_enqueued_by_the_sweeper(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    # What an API killed between its commit and its enqueue leaves behind: a row, no job.
    stack = make_stack(workers=1)
    prompts = [f"committed, never queued {i}" for i in range(5)]
    ids = [stack.db.insert_pending(stack.user_id, stack.model_id, p) for p in prompts]
    assert stack.queued_generations() == 0
    rows = stack.settle(ids, timeout=15)
    assert {r.status for r in rows.values()} == {"completed"}
    assert _answered_once(fake_llm, prompts)


def test_an_api_that_cannot_reach_redis_still_accepts_and_nothing_is_lost(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    stack = make_stack(workers=1, api_env={"REDIS_URL": nowhere})
    prompts = [f"accepted by a cut-off api {i}" for i in range(5)]
    ids = [stack.submit(p) for p in prompts]
    rows = stack.settle(ids, timeout=15)
    assert {r.status for r in rows.values()} == {"completed"}
    assert _answered_once(fake_llm, prompts)
    assert stack.api is not None
    assert stack.api.log().count("enqueue_failed") == 5


def test_a_worker_rides_out_repeated_redis_outages_without_leaking_connections(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    stack = make_stack(workers=1)
    warm_up = stack.submit("before any outage")
    stack.settle([warm_up], timeout=10)
    baseline = stack.db.backends("worker")
    for outage in range(3):
        stack.redis.kill()
        time.sleep(1.5)
        stack.redis.start()
        # Every outage costs about the same: the restart backoff starts again from 1 s.
        began = time.monotonic()
        cid = stack.submit(f"after outage {outage}")
        assert stack.settle([cid], timeout=10)[cid].status == "completed"
        assert time.monotonic() - began < 6, f"recovery from outage {outage} was slow"
        assert fake_llm.stats().calls_for(f"after outage {outage}") == 1
    # The worker that lost Redis closed its database pool; one more per outage would leak.
    assert stack.db.backends("worker") <= baseline + 1, (baseline, stack.db.backends("worker"))
