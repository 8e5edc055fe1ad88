"""Starting jobs: a batch in one round trip, skipping what arq would skip, within free slots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from shared.settings import Settings
from worker.arq_worker import build_worker
from worker.observability import Observability
from worker.queue_worker import QueueWorker


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
    keys = [k async for k in pool.scan_iter(match=f"{in_progress_key_prefix}start-*")]
    await pool.delete(settings.QUEUE_NAME, *keys)
    await built.close()


async def _queue(worker: QueueWorker, **scores: int) -> None:
    await worker.pool.zadd(worker.queue_name, scores)


def _counting_commands(worker: QueueWorker, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    execute = worker.pool.execute_command

    async def counted(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]))
        return await execute(*args, **kwargs)

    monkeypatch.setattr(worker.pool, "execute_command", counted)
    return sent


async def test_due_jobs_nobody_runs_start_and_the_rest_are_skipped_as_arq_skips_them(
    worker: QueueWorker,
) -> None:
    now = timestamp_ms()
    await _queue(worker, **{"start-due": now - 10, "start-running": now - 10})
    await _queue(worker, **{"start-deferred": now + 60_000})
    await worker.pool.set(f"{in_progress_key_prefix}start-running", b"1")
    ids = [b"start-due", b"start-running", b"start-deferred", b"start-gone"]
    await worker.start_jobs(ids)
    assert list(worker.tasks) == ["start-due"]
    assert worker.job_counter == 1
    ttl = await worker.pool.pttl(f"{in_progress_key_prefix}start-due")
    assert 0 < ttl <= worker.in_progress_timeout_s * 1000
    assert not await worker.pool.exists(f"{in_progress_key_prefix}start-deferred")


async def test_no_more_jobs_start_than_there_are_free_slots(worker: QueueWorker) -> None:
    now = timestamp_ms()
    await _queue(worker, **{f"start-{n}": now - 10 for n in range(5)})
    await worker.start_jobs([f"start-{n}".encode() for n in range(5)])
    assert list(worker.tasks) == ["start-0", "start-1", "start-2"]
    assert worker.job_counter == worker.max_jobs
    # Full: nothing more starts, and nothing is marked in progress for a job left queued.
    await worker.start_jobs([b"start-3", b"start-4"])
    assert len(worker.tasks) == 3
    assert not await worker.pool.exists(f"{in_progress_key_prefix}start-3")


async def test_a_batch_starts_in_one_round_trip(
    worker: QueueWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = timestamp_ms()
    await _queue(worker, **{"start-warm": now - 10})
    await worker.start_jobs([b"start-warm"])  # the script is loaded into Redis once
    await _queue(worker, **{"start-a": now - 10, "start-b": now - 10})
    sent = _counting_commands(worker, monkeypatch)
    await worker.start_jobs([b"start-a", b"start-b"])
    assert sent == ["EVALSHA"]
    assert sorted(worker.tasks) == ["start-a", "start-b", "start-warm"]


async def test_jobs_another_worker_runs_are_passed_over_not_counted(worker: QueueWorker) -> None:
    """arq keeps a running job in the queue until it ends: a second worker reading the queue
    sees the first worker's jobs first, and must go past them to fill its free slots."""
    now = timestamp_ms()
    await _queue(worker, **{f"start-{n}": now - 10 for n in range(6)})
    for n in range(3):
        await worker.pool.set(f"{in_progress_key_prefix}start-{n}", b"1")
    await worker.start_jobs([f"start-{n}".encode() for n in range(6)])
    assert sorted(worker.tasks) == ["start-3", "start-4", "start-5"]
