"""Jobs that never reach Redis, or vanish with it: PostgreSQL remembers, the sweeper re-sends."""

from __future__ import annotations

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import MakeStack
from tests.support.processes import Process, free_port, wait_until

pytestmark = pytest.mark.fault


def _answered_once(fake_llm: FakeLLMServer, prompts: list[str]) -> bool:
    stats = fake_llm.stats()
    return all(stats.calls_for(p) == 1 for p in prompts)


def _lost_redis(worker: Process, count: int) -> list[float]:
    """Wait until the worker has logged losing Redis `count` times; each time's restart delay."""
    wait_until(
        lambda: len(worker.events("worker_lost_redis")) >= count,
        timeout=30,
        what=f"the worker to lose Redis {count} times",
    )
    return [float(e.extra["restart_in"]) for e in worker.events("worker_lost_redis")]


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
    # An outage, not a blip: the worker noticed, and its first restart failed as well.
    _lost_redis(stack.workers[0], 2)
    stack.redis.start()
    rows = stack.settle(ids, timeout=25)
    assert {r.status for r in rows.values()} == {"completed"}
    assert _answered_once(fake_llm, prompts)
    assert stack.workers[0].alive
    assert stack.api is not None
    assert stack.api.log().count("enqueue_failed") == 5


def test_restarts_into_a_redis_that_is_still_down_back_off(make_stack: MakeStack) -> None:
    stack = make_stack(workers=1)
    stack.redis.kill()
    assert _lost_redis(stack.workers[0], 3)[:3] == [1.0, 2.0, 4.0]


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
    worker = stack.workers[0]
    warm_up = stack.submit("before any outage")
    stack.settle([warm_up], timeout=10)
    for outage in range(3):
        stack.redis.kill()
        # Noticed, with the restart backoff starting again from 1 s: every outage costs the
        # same, not more than the last.
        assert _lost_redis(worker, outage + 1)[outage] == 1.0
        stack.redis.start()
        cid = stack.submit(f"after outage {outage}")
        assert stack.settle([cid], timeout=30)[cid].status == "completed"
        assert fake_llm.stats().calls_for(f"after outage {outage}") == 1
    assert len(worker.events("worker_lost_redis")) == 3
    # The worker that lost Redis closed its database pool before it started again: no
    # connection opened before the last outage is still open.
    last_outage = worker.events("worker_lost_redis")[-1].at
    opened = stack.db.backend_starts("worker")
    assert opened, "the restarted worker answered without a database connection"
    assert [at for at in opened if at < last_outage] == []
