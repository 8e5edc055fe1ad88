"""The arq Redis pool and the enqueue call; both processes use the same serializer."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.utils import timestamp_ms
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.detail_spans import DeferringTracer
from shared.job_contract import (
    GENERATE_CONVERSATION,
    GenerationJob,
    deserialize_job,
    generation_job_id,
    serialize_job,
)
from shared.models import Priority
from shared.redis_connection import connection_pool
from shared.settings import Settings


def create_queue_pool(settings: Settings) -> ArqRedis:
    """A lazily connecting pool: the API starts, and accepts work, while Redis is down."""
    pool = connection_pool(
        settings,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return ArqRedis(
        connection_pool=pool,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=settings.QUEUE_NAME,
    )


def heartbeat_key(queue_name: str, host: str, pid: int) -> str:
    """Where one worker process writes arq's status line (jobs done, failed, ongoing)."""
    return f"{queue_name}:health-check:{host}:{pid}"


def heartbeat_registry(queue_name: str) -> str:
    """The sorted set of the queue's live workers: member `host:pid`, score its expiry time."""
    return f"{queue_name}:workers"


async def live_workers(pool: ArqRedis, queue_name: str, *, host: str | None = None) -> int:
    """Worker processes whose heartbeat has not expired, optionally on one host only."""
    registry = heartbeat_registry(queue_name)
    now = time.time()
    if host is None:
        return int(await pool.zcount(registry, now, "+inf"))
    members = await pool.zrangebyscore(registry, now, "+inf")
    prefix = f"{host}:".encode()
    return sum(1 for member in members if member.startswith(prefix))


def wake_channel(queue_name: str) -> str:
    """Where enqueues announce new work, so an idle worker wakes at once instead of polling."""
    return f"{queue_name}:wake"


# The queue is arq's sorted set, its scores in two bands (docs/architecture.md, "Scheduling"):
# below READY_BELOW a score is a job's rank in the fair order, due now, lowest first; from
# READY_BELOW up it is a time in ms (arq's own format) before which the job does not run:
# a deferral or a retry, ranked when it is due. A started job is moved to RUNNING_MARK (far in
# the future, so never due) until it ends: waiting jobs are then always at the front.
READY_BELOW = 10**12  # ms since the epoch: 2001; every real time is above, every rank below
RUNNING_MARK = 10**15


def fair_clock(queue_name: str) -> str:
    """The virtual time: the highest rank a job has been started at."""
    return f"{queue_name}:fair:clock"


def fair_flows(queue_name: str) -> str:
    """Hash: flow (user and priority) -> the rank after its last queued job."""
    return f"{queue_name}:fair:flows"


def waiting_counts(queue_name: str) -> str:
    """Hash: priority -> generation jobs waiting (ranked or deferred, not running)."""
    return f"{queue_name}:waiting"


async def waiting_by_priority(redis: Redis, queue_name: str) -> dict[str, int]:
    """Generation jobs waiting in the queue per priority: one read of one small hash."""
    counts: dict[bytes, bytes] = await redis.hgetall(waiting_counts(queue_name))  # type: ignore[misc]  # redis-py types sync and async clients as one
    found = {key.decode(): max(int(value), 0) for key, value in counts.items()}
    return {p.value: found.get(p.value, 0) for p in Priority}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a job goes in the fair order: its flow (one per user and priority; None: the
    front of the queue), what one job costs that flow (batch costs more, so interactive work
    gets the bigger share), and the provider whose capacity it needs (None: no check)."""

    flow: str | None = None
    cost: float = 1
    provider: str | None = None


def placement_for(
    user_id: uuid.UUID,
    priority: Priority,
    provider: str | None,
    *,
    settings: Settings,
    weight: int = 1,
) -> Placement:
    """A conversation's place: its user's flow at its priority, at that priority's cost
    shared by the user's weight (weight 2: each job moves the flow on half as far)."""
    cost = settings.SCHEDULER_BATCH_COST if priority is Priority.BATCH else 1
    return Placement(flow=f"{user_id}:{priority.value}", cost=cost / weight, provider=provider)


# The waiting jobs per priority (the flow's suffix), kept by every script that moves a job in
# or out of waiting. Needs a local `waiting_key`; defines count_waiting(flow, change).
COUNT_WAITING = """
local function count_waiting(flow, change)
  if type(flow) == 'string' then
    local priority = string.match(flow, ':([%w_]+)$')
    if priority then
      redis.call('HINCRBY', waiting_key, priority, change)
    end
  end
end
"""

# Start-time fair queuing over the flows: a job's rank is where its flow's last one ended, or
# the clock if the flow was idle (a user with nothing queued goes next); the flow then moves on
# by the job's cost. Used by the enqueue here and by the worker's take (worker/scheduler.py).
# Needs locals `clock_key`, `flows_key`; defines rank_for(flow, cost).
RANK_FOR = """
local function rank_for(flow, cost)
  local clock = tonumber(redis.call('GET', clock_key) or '0')
  if flow == nil or flow == '' then
    return clock
  end
  local start = math.max(tonumber(redis.call('HGET', flows_key, flow) or '0'), clock)
  redis.call('HSET', flows_key, flow, start + cost)
  return start
end
"""

# arq's enqueue is WATCH, EXISTS, MULTI/PSETEX/ZADD/EXEC: three round trips. This does the
# same writes, in the format arq reads, in one, ranks the job and wakes the idle workers.
# KEYS: job key, result key, queue, wake channel, in-progress key, clock, flows, waiting.
# ARGV: expiry ms, payload, job id, now ms, defer ms, flow, cost.
_ENQUEUE = (
    """
local clock_key, flows_key, waiting_key = KEYS[6], KEYS[7], KEYS[8]
"""
    + COUNT_WAITING
    + RANK_FOR
    + f"""
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  -- Queued already. One left at the running mark by a worker that died (the sweeper has
  -- released it) is due again: the next take ranks it.
  local score = redis.call('ZSCORE', KEYS[3], ARGV[3])
  if score and tonumber(score) >= {RUNNING_MARK} and redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
    redis.call('PUBLISH', KEYS[4], ARGV[3])
    count_waiting(ARGV[6], 1)
  end
  return 0
end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
local score
if tonumber(ARGV[5]) > 0 then
  score = tonumber(ARGV[4]) + tonumber(ARGV[5])
else
  score = rank_for(ARGV[6], tonumber(ARGV[7]))
end
redis.call('ZADD', KEYS[3], score, ARGV[3])
redis.call('PUBLISH', KEYS[4], ARGV[3])
count_waiting(ARGV[6], 1)
return 1
"""
)
# Made once: its SHA-1 is computed here, not on every enqueue. EVALSHA, falling back to EVAL
# the first time a server sees the script.
_ENQUEUE_SCRIPT = AsyncScript(None, _ENQUEUE.encode())  # type: ignore[arg-type]  # bytes: no client needed
# The enqueue's span is made here, not by the redis instrumentation, which would format all of
# the script's keys and arguments (the job body among them) into a statement on every call.
_tracer = DeferringTracer(trace.get_tracer("ai_eng_api.queue"))
_ENQUEUE_SPAN_ATTRIBUTES = {"db.system.name": "redis", "db.operation.name": "EVALSHA"}


async def enqueue_generation(
    pool: ArqRedis,
    conversation_id: uuid.UUID,
    *,
    trace_context: dict[str, str] | None = None,
    defer_seconds: float | None = None,
    placement: Placement | None = None,
) -> bool:
    """Queue the generation of one conversation; False when its job is already queued."""
    job = GenerationJob(conversation_id=conversation_id, trace_context=trace_context or {})
    return await enqueue_job(
        pool,
        pool.default_queue_name,
        function=GENERATE_CONVERSATION,
        args=[str(job.conversation_id), job.trace_context],
        job_id=generation_job_id(conversation_id),
        defer_seconds=defer_seconds,
        placement=placement,
    )


async def enqueue_job(
    redis: Redis,
    queue_name: str,
    *,
    function: str,
    args: list[Any],
    job_id: str,
    defer_seconds: float | None = None,
    placement: Placement | None = None,
) -> bool:
    """Queue one arq job in arq's own format, in one round trip, ranked by `placement`, and
    wake an idle worker; False when a job with that id is queued already."""
    now_ms = timestamp_ms()
    defer_ms = round(defer_seconds * 1000) if defer_seconds else 0
    place = placement or Placement()
    body: dict[str, Any] = {"t": None, "f": function, "a": args, "k": {}, "et": now_ms}
    # Beside arq's fields, which it ignores: what ranks the job again after a deferral, and the
    # capacity it waits for.
    body.update({"fl": place.flow, "c": place.cost, "p": place.provider})
    # Named and attributed as the redis instrumentation would (after it starts): one without
    # a parent (a sweeper's) is dropped like any root redis span (`DropRootRedisSampler`).
    with _tracer.start_as_current_span("EVALSHA", kind=SpanKind.CLIENT) as span:
        span.set_attributes(_ENQUEUE_SPAN_ATTRIBUTES)
        with suppress_instrumentation():
            queued = await _ENQUEUE_SCRIPT(
                keys=[
                    job_key_prefix + job_id,
                    result_key_prefix + job_id,
                    queue_name,
                    wake_channel(queue_name),
                    in_progress_key_prefix + job_id,
                    fair_clock(queue_name),
                    fair_flows(queue_name),
                    waiting_counts(queue_name),
                ],
                args=[
                    defer_ms + expires_extra_ms,
                    serialize_job(body),
                    job_id,
                    now_ms,
                    defer_ms,
                    place.flow or "",
                    place.cost,
                ],
                client=redis,
            )
    return bool(queued)


async def release_job(pool: ArqRedis, conversation_id: uuid.UUID) -> None:
    """Let the conversation's job run again now, though a dead worker had started it.

    arq marks a started job "in progress" for the longest function timeout + 10 s and runs
    nobody else's copy meanwhile, so the job of a SIGKILLed worker would sit idle long after
    its lease ran out. Call this only when the lease has expired: the job timeout is shorter
    than the lease, so no live attempt still owns the marker (and the claim in PostgreSQL
    would refuse a second one anyway).
    """
    await pool.delete(in_progress_key_prefix + generation_job_id(conversation_id))
