"""The scheduler's order and admission: fair across users, interactive before batch, never
more started than a provider's servers take, and no job stranded by how it ended.

Each test runs on fakeredis and on the run's real Redis (scripts, scores and TIME differ in
ways a fake could hide), each with a queue of its own.
"""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from shared.job_contract import serialize_job
from shared.model_servers import ConfiguredServer
from shared.models import Priority
from shared.queue import (
    READY_BELOW,
    RUNNING_MARK,
    Placement,
    enqueue_job,
    placement_for,
    waiting_by_priority,
)
from shared.settings import Settings
from worker.scheduler import Scheduler, admission_key, provider_capacities

USER_A, USER_B = uuid.uuid4(), uuid.uuid4()
# Job ids are global in arq's key space: this run's own, so runs sharing a Redis never meet.
RUN = uuid.uuid4().hex[:8]


def _id(name: str) -> str:
    return f"sched-{RUN}-{name}"


def _scheduler(pool: ArqRedis, **capacities: int) -> Scheduler:
    return Scheduler(pool, pool.default_queue_name, in_progress_ms=60_000, capacities=capacities)


async def _enqueue(
    pool: ArqRedis,
    name: str,
    placement: Placement | None = None,
    *,
    defer_seconds: float | None = None,
) -> bool:
    return await enqueue_job(
        pool,
        pool.default_queue_name,
        function="noop",
        args=[],
        job_id=_id(name),
        defer_seconds=defer_seconds,
        placement=placement,
    )


def _of(user: uuid.UUID, priority: Priority = Priority.INTERACTIVE, provider: str | None = None):  # type: ignore[no-untyped-def]
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return placement_for(user, priority, provider, settings=settings)


async def _take_all(scheduler: Scheduler, count: int) -> list[str]:
    """Start `count` jobs one at a time, each finished before the next: the start order."""
    order: list[str] = []
    for _ in range(count):
        started = await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500)
        if not started:
            break
        job_id = started[0].job_id
        order.append(job_id.removeprefix(_id("")))
        await scheduler.finish(
            job_id, now_ms=timestamp_ms(), done=True, incr_score=None, keep_in_progress_ms=None
        )
    return order


async def test_a_user_with_nothing_queued_goes_next_however_much_another_has_queued(
    pool: ArqRedis,
) -> None:
    scheduler = _scheduler(pool)
    for n in range(50):
        await _enqueue(pool, f"a{n}", _of(USER_A))
    assert await _take_all(scheduler, 10) == [f"a{n}" for n in range(10)]
    await _enqueue(pool, "b0", _of(USER_B))
    # First in enqueue order would be a10..a49, then b0.
    assert (await _take_all(scheduler, 1)) == ["b0"]


async def test_two_users_with_work_queued_take_turns(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool)
    for n in range(20):
        await _enqueue(pool, f"a{n}", _of(USER_A))
    for n in range(3):
        await _enqueue(pool, f"b{n}", _of(USER_B))
    order = await _take_all(scheduler, 8)
    # Turns, not "all of B first": a user who was idle earns no credit for it.
    assert sorted(order[:6]) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert order[6:] == ["a3", "a4"]


async def test_interactive_work_overtakes_batch_work_which_still_moves(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool)
    for n in range(20):
        await _enqueue(pool, f"batch{n}", _of(USER_A, Priority.BATCH))
    for n in range(8):
        await _enqueue(pool, f"int{n}", _of(USER_A))
    order = await _take_all(scheduler, 12)
    interactive = [i for i, name in enumerate(order) if name.startswith("int")]
    batch = [name for name in order if name.startswith("batch")]
    # A batch job costs 4 (the default): while both wait, 4 interactive jobs go per batch one.
    assert len(interactive) == 8
    assert max(interactive) <= 9
    assert batch == ["batch0", "batch1", "batch2", "batch3"]


async def test_no_more_jobs_of_a_provider_start_than_its_servers_take(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool, ollama=2)
    for n in range(5):
        await _enqueue(pool, f"o{n}", _of(USER_A, provider="ollama"))
    await _enqueue(pool, "hook", None)  # no provider: not limited
    started = await scheduler.take(now_ms=timestamp_ms(), limit=10, scan=500)
    assert sorted(s.job_id for s in started) == [_id("hook"), _id("o0"), _id("o1")]
    assert await pool.zcard(admission_key(pool.default_queue_name, "ollama")) == 2
    # Full: the rest wait in the queue, ranked, not in a worker's slots.
    assert await scheduler.take(now_ms=timestamp_ms(), limit=10, scan=500) == []
    assert not await pool.exists(in_progress_key_prefix + _id("o2"))

    await scheduler.finish(
        _id("o0"), now_ms=timestamp_ms(), done=True, incr_score=None, keep_in_progress_ms=None
    )
    again = await scheduler.take(now_ms=timestamp_ms(), limit=10, scan=500)
    assert [s.job_id for s in again] == [_id("o2")]


async def test_a_dead_workers_admission_comes_back_when_its_lease_ends(pool: ArqRedis) -> None:
    scheduler = Scheduler(pool, pool.default_queue_name, in_progress_ms=50, capacities={"x": 1})
    await _enqueue(pool, "first", _of(USER_A, provider="x"))
    await _enqueue(pool, "second", _of(USER_A, provider="x"))
    assert len(await scheduler.take(now_ms=timestamp_ms(), limit=5, scan=500)) == 1
    # Its worker never finishes it. The token's lease is Redis time: wait for it to pass.
    tokens = admission_key(pool.default_queue_name, "x")
    for _ in range(10_000):
        seconds, micros = await pool.time()
        held = await pool.zrange(tokens, 0, 0, withscores=True)
        if not held or seconds * 1000 + micros // 1000 > held[0][1]:
            break
    started = await scheduler.take(now_ms=timestamp_ms(), limit=5, scan=500)
    assert [s.job_id for s in started] == [_id("second")]


async def test_a_retried_job_waits_its_delay_then_is_ranked_again(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool)
    await _enqueue(pool, "r", _of(USER_A))
    assert await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500)
    assert await pool.zscore(pool.default_queue_name, _id("r")) == RUNNING_MARK
    now = timestamp_ms()
    # What arq passes for a Retry(defer=5 s) of a job started at the running mark.
    incr = 5_000 + (now - RUNNING_MARK)
    await scheduler.finish(
        _id("r"), now_ms=now, done=False, incr_score=incr, keep_in_progress_ms=None
    )
    assert await pool.zscore(pool.default_queue_name, _id("r")) == now + 5_000
    assert await scheduler.take(now_ms=now + 4_000, limit=1, scan=500) == []
    (again,) = await scheduler.take(now_ms=now + 5_000, limit=1, scan=500)
    assert again.job_id == _id("r")


async def test_a_deferred_job_is_not_started_before_it_is_due(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool)
    await _enqueue(pool, "later", _of(USER_A), defer_seconds=60)
    score = await pool.zscore(pool.default_queue_name, _id("later"))
    assert score is not None
    assert score >= READY_BELOW
    assert await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500) == []
    (due,) = await scheduler.take(now_ms=timestamp_ms() + 61_000, limit=1, scan=500)
    assert due.job_id == _id("later")


async def test_a_job_shutdown_took_away_is_due_again_at_once(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool)
    await _enqueue(pool, "s", _of(USER_A))
    await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500)
    await scheduler.finish(
        _id("s"), now_ms=timestamp_ms(), done=False, incr_score=None, keep_in_progress_ms=None
    )
    (again,) = await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500)
    assert again.job_id == _id("s")


async def test_a_job_its_dead_worker_left_running_is_ranked_again_by_the_next_enqueue(
    pool: ArqRedis,
) -> None:
    """The sweeper's way back for a SIGKILLed worker's job: it deletes the in-progress key
    (`release_job`) and enqueues again, which finds the job still queued at the running mark."""
    scheduler = _scheduler(pool)
    await _enqueue(pool, "k", _of(USER_A))
    await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500)
    await pool.delete(in_progress_key_prefix + _id("k"))
    assert await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500) == []
    assert not await _enqueue(pool, "k", _of(USER_A))  # still one job
    (again,) = await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500)
    assert again.job_id == _id("k")


async def test_a_running_job_is_not_started_twice(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool)
    await _enqueue(pool, "once", _of(USER_A))
    assert len(await scheduler.take(now_ms=timestamp_ms(), limit=5, scan=500)) == 1
    assert not await _enqueue(pool, "once", _of(USER_A))  # a duplicate delivery
    assert await scheduler.take(now_ms=timestamp_ms(), limit=5, scan=500) == []


async def test_jobs_queued_before_ranks_existed_still_run(pool: ArqRedis) -> None:
    """A queue written by an older release holds due times only: they come due and run."""
    scheduler = _scheduler(pool)
    await pool.zadd(pool.default_queue_name, {_id("old"): timestamp_ms() - 1})
    await pool.set(
        "arq:job:" + _id("old"), serialize_job({"t": None, "f": "noop", "a": [], "k": {}})
    )
    (old,) = await scheduler.take(now_ms=timestamp_ms(), limit=1, scan=500)
    assert old.job_id == _id("old")


def test_a_provider_is_limited_only_when_every_server_has_a_capacity() -> None:
    servers = [
        ConfiguredServer("ollama", "http://a", 2),
        ConfiguredServer("ollama", "http://b", 3),
        ConfiguredServer("openai", "http://c", 0),
    ]
    assert provider_capacities(servers) == {"ollama": 5}


async def test_a_full_providers_jobs_do_not_hold_back_other_work_behind_them(
    pool: ArqRedis,
) -> None:
    scheduler = _scheduler(pool, x=1)
    for n in range(10):
        await _enqueue(pool, f"x{n}", _of(USER_A, provider="x"))
    await _enqueue(pool, "free", _of(USER_A))  # no provider: a webhook delivery, say
    started = await scheduler.take(now_ms=timestamp_ms(), limit=5, scan=500)
    assert sorted(s.job_id for s in started) == [_id("free"), _id("x0")]


async def test_more_jobs_than_one_chunk_start_in_one_take_in_rank_order(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool)
    for n in range(150):
        await _enqueue(pool, f"{n:03}", _of(USER_A))
    started = await scheduler.take(now_ms=timestamp_ms(), limit=150, scan=500)
    assert [s.job_id for s in started] == [_id(f"{n:03}") for n in range(150)]
    assert [s.rank for s in started] == [float(n) for n in range(150)]


async def test_waiting_jobs_are_counted_per_priority_through_every_way_a_job_moves(
    pool: ArqRedis,
) -> None:
    scheduler, name = _scheduler(pool), pool.default_queue_name
    for n in range(3):
        await _enqueue(pool, f"i{n}", _of(USER_A))
    for n in range(2):
        await _enqueue(pool, f"b{n}", _of(USER_B, Priority.BATCH))
    await _enqueue(pool, "hook", None)  # not a conversation: not counted
    assert await waiting_by_priority(pool, name) == {"interactive": 3, "batch": 2}

    started = {s.job_id for s in await scheduler.take(now_ms=timestamp_ms(), limit=6, scan=500)}
    assert len(started) == 6
    assert await waiting_by_priority(pool, name) == {"interactive": 0, "batch": 0}

    now = timestamp_ms()
    await scheduler.finish(
        _id("i0"),
        now_ms=now,
        done=False,
        incr_score=1000 + now - RUNNING_MARK,
        keep_in_progress_ms=None,
    )  # a retry waits again
    await scheduler.finish(
        _id("b0"), now_ms=now, done=False, incr_score=None, keep_in_progress_ms=None
    )  # handed back at shutdown
    await scheduler.finish(
        _id("i1"), now_ms=now, done=True, incr_score=None, keep_in_progress_ms=None
    )
    assert await waiting_by_priority(pool, name) == {"interactive": 1, "batch": 1}

    # A dead worker's job, made due again by the sweeper's enqueue, waits again too.
    await pool.delete(in_progress_key_prefix + _id("i2"))
    await _enqueue(pool, "i2", _of(USER_A))
    assert await waiting_by_priority(pool, name) == {"interactive": 2, "batch": 1}


async def test_a_users_weight_is_its_share_while_others_wait_too(pool: ArqRedis) -> None:
    scheduler = _scheduler(pool)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    heavy = placement_for(USER_A, Priority.INTERACTIVE, None, settings=settings, weight=3)
    for n in range(20):
        await _enqueue(pool, f"h{n}", heavy)
        await _enqueue(pool, f"l{n}", _of(USER_B))
    order = await _take_all(scheduler, 16)
    # Weight 3 against 1: three of every four starts while both have work waiting.
    assert sum(1 for name in order if name.startswith("h")) == 12
