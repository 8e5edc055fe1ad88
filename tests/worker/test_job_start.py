"""Starting jobs: a batch in one round trip, within free slots, past what others run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from shared.queue import enqueue_job
from shared.settings import Settings
from worker.arq_worker import build_worker
from worker.observability import Observability
from worker.queue_worker import QueueWorker
from worker.scheduler import Scheduler


@pytest.fixture
async def worker(
    worker_settings: Settings, observability: Observability
) -> AsyncIterator[QueueWorker]:
    settings = worker_settings.model_copy(update={"WORKER_MAX_JOBS": 3})
    built = build_worker(settings, observability, handle_signals=False)
    pool = built.pool
    await pool.delete(settings.QUEUE_NAME)
    yield built
    for task in built.tasks.values():
        task.cancel()
    await asyncio.gather(*built.tasks.values(), return_exceptions=True)
    built.tasks.clear()  # ended here; `close` would wait on them again
    keys = [k async for k in pool.scan_iter(match="arq:*:start-*")]
    await pool.delete(settings.QUEUE_NAME, *keys)
    await built.close()


async def _queue(worker: QueueWorker, *names: str) -> None:
    for name in names:
        await enqueue_job(worker.pool, worker.queue_name, function="noop", args=[], job_id=name)


async def _poll(worker: QueueWorker) -> None:
    await worker.start_jobs(worker.max_jobs - worker.job_counter)


def _counting_commands(worker: QueueWorker, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    execute = worker.pool.execute_command

    async def counted(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]))
        return await execute(*args, **kwargs)

    monkeypatch.setattr(worker.pool, "execute_command", counted)
    return sent


async def test_due_jobs_nobody_runs_start_and_the_rest_wait(worker: QueueWorker) -> None:
    await _queue(worker, "start-due", "start-running")
    await enqueue_job(
        worker.pool,
        worker.queue_name,
        function="noop",
        args=[],
        job_id="start-deferred",
        defer_seconds=60,
    )
    await worker.pool.set(f"{in_progress_key_prefix}start-running", b"1")
    await _poll(worker)
    assert list(worker.tasks) == ["start-due"]
    assert worker.job_counter == 1
    ttl = await worker.pool.pttl(f"{in_progress_key_prefix}start-due")
    assert 0 < ttl <= worker.in_progress_timeout_s * 1000
    assert not await worker.pool.exists(f"{in_progress_key_prefix}start-deferred")


async def test_no_more_jobs_start_than_there_are_free_slots(worker: QueueWorker) -> None:
    await _queue(worker, *(f"start-{n}" for n in range(5)))
    await _poll(worker)
    assert list(worker.tasks) == ["start-0", "start-1", "start-2"]
    assert worker.job_counter == worker.max_jobs
    # Full: nothing more starts, and nothing is marked in progress for a job left queued.
    await _poll(worker)
    assert len(worker.tasks) == 3
    assert not await worker.pool.exists(f"{in_progress_key_prefix}start-3")


async def test_a_batch_starts_in_one_round_trip(
    worker: QueueWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _queue(worker, "start-warm")
    await _poll(worker)  # the script is loaded into Redis once
    await _queue(worker, "start-a", "start-b")
    sent = _counting_commands(worker, monkeypatch)
    await _poll(worker)
    assert sent == ["EVALSHA"]
    assert sorted(worker.tasks) == ["start-a", "start-b", "start-warm"]


async def test_jobs_another_worker_runs_are_passed_over_not_counted(worker: QueueWorker) -> None:
    """A job another worker started stays in the queue until it ends (at the running mark):
    a second worker must fill its free slots from the jobs behind it."""
    await _queue(worker, *(f"start-{n}" for n in range(3)))
    other = Scheduler(worker.pool, worker.queue_name, in_progress_ms=60_000, capacities={})
    assert len(await other.take(now_ms=timestamp_ms(), limit=3, scan=100)) == 3
    await _queue(worker, *(f"start-{n}" for n in range(3, 6)))
    await _poll(worker)
    assert sorted(worker.tasks) == ["start-3", "start-4", "start-5"]
