"""Which queued jobs a worker starts next: fair across users, interactive before batch, and
never more at once than the model servers of a provider can take.

The queue is arq's sorted set; `shared/queue.py` says what its scores mean (a rank in the fair
order, a due time, or the running mark). One script per poll (`take`) ranks the deferred jobs
that have come due, then walks the ranked ones from the front and starts those that fit:

* **Fair order.** Ranks come from start-time fair queuing over flows (one per user and
  priority): a user with nothing queued ranks next, a user with 10,000 queued ranks each one
  behind everybody else's next job. A batch job costs its flow `SCHEDULER_BATCH_COST` ranks,
  so interactive work gets that many times the share of batch work while both wait, and batch
  work still moves.
* **Admission.** A job names the provider it needs (`p` in the payload). When every server of
  that provider has a capacity, the provider has as many admission tokens as their sum (a
  sorted set of holders scored by lease end, Redis time): a job starts only with a token, and
  gives it back when it ends (`finish`), or its lease runs out if its worker died. So a full
  provider's work waits in the queue, in fair order, and does not fill workers' slots only to
  be handed back: a job that arrives while 2,000 wait behind full servers starts as soon as a
  slot frees, if it is first in the fair order.

The in-progress key is arq's own, set as arq sets it; a started job is moved to the running
mark, so waiting jobs are always at the front of the set and the walk reads no running ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.model_servers import ConfiguredServer
from shared.queue import (
    COUNT_WAITING,
    RANK_FOR,
    READY_BELOW,
    RUNNING_MARK,
    fair_clock,
    fair_flows,
    waiting_counts,
)

# At most this many jobs that came due are ranked per take (the rest at the next one).
PROMOTE_PER_TAKE = 200
# Ranked jobs read per round trip inside the script.
CHUNK = 64
# A take gives up after passing over this many jobs it cannot start (their provider is full,
# or they run elsewhere): with a full provider's thousands of jobs at the front, a poll costs
# this much, not the whole queue. Behind them a job of another provider waits its turn.
PASS_OVER_MAX = 64


# A job's payload as a table (nil: gone or not JSON). Defines job_body(job_key).
JOB_BODY = """
local function job_body(job_key)
  local raw = redis.call('GET', job_key)
  if not raw then
    return nil
  end
  local ok, body = pcall(cjson.decode, raw)
  if not ok or type(body) ~= 'table' then
    return nil
  end
  return body
end
"""


def admission_key(queue_name: str, provider: str) -> str:
    """The provider's admission tokens: members job ids, scores their lease's end (ms)."""
    return f"{queue_name}:admit:{provider}"


# KEYS: queue, clock, flows, waiting counts.
# ARGV: now (ms), in-progress lifetime (ms), in-progress prefix, job prefix, how many to start,
# how many ranked jobs to look at, token lease (ms), then provider/capacity pairs (providers
# with no pair are not limited). Returns started job ids, each followed by its rank.
_TAKE = (
    """
local queue, clock_key, flows_key, waiting_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
"""
    + COUNT_WAITING
    + RANK_FOR
    + JOB_BODY
    + f"""
local now = tonumber(ARGV[1])
local limit, scan, lease = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local capacity = {{}}
for i = 8, #ARGV, 2 do
  capacity[ARGV[i]] = tonumber(ARGV[i + 1])
end

-- Deferred jobs that are due get a rank: at the end of their flow, or the front.
local due = redis.call('ZRANGEBYSCORE', queue, {READY_BELOW}, now, 'LIMIT', 0, {PROMOTE_PER_TAKE})
for _, job_id in ipairs(due) do
  local body = job_body(ARGV[4] .. job_id)
  local rank
  if body and type(body['fl']) == 'string' then
    rank = rank_for(body['fl'], tonumber(body['c']) or 1)
  else
    rank = rank_for(nil, 0)
  end
  redis.call('ZADD', queue, 'XX', rank, job_id)
end

local started = {{}}
if limit <= 0 then
  return started
end
local time = redis.call('TIME')
local redis_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local full = {{}}
local clock = tonumber(redis.call('GET', clock_key) or '0')
-- The ranked jobs in chunks, from the front; a started one leaves the ranks (for the running
-- mark), so the next chunk starts that much earlier.
local offset, looked, passed = 0, 0, 0
while #started < 2 * limit and looked < scan and passed < {PASS_OVER_MAX} do
  local ranked = redis.call(
    'ZRANGEBYSCORE', queue, '-inf', '({READY_BELOW}', 'WITHSCORES', 'LIMIT', offset, {CHUNK})
  if #ranked == 0 then
    break
  end
  local moved = 0
  for i = 1, #ranked, 2 do
    if #started >= 2 * limit or passed >= {PASS_OVER_MAX} then
      break
    end
    looked = looked + 1
    local job_id, rank = ranked[i], tonumber(ranked[i + 1])
    local admitted = redis.call('EXISTS', ARGV[3] .. job_id) == 0
    local body = nil
    if admitted then
      body = job_body(ARGV[4] .. job_id)
      local provider = body and body['p']
      local cap = type(provider) == 'string' and capacity[provider] or nil
      if cap then
        local tokens = queue .. ':admit:' .. provider
        if not full[provider] then
          redis.call('ZREMRANGEBYSCORE', tokens, '-inf', redis_now)
          full[provider] = redis.call('ZCARD', tokens) >= cap
        end
        if full[provider] then
          admitted = false
        else
          redis.call('ZADD', tokens, redis_now + lease, job_id)
          redis.call('PEXPIRE', tokens, lease)
        end
      end
    end
    if admitted then
      redis.call('PSETEX', ARGV[3] .. job_id, ARGV[2], '1')
      redis.call('ZADD', queue, 'XX', {RUNNING_MARK}, job_id)
      moved = moved + 1
      count_waiting(body and body['fl'], -1)
      if rank > clock then
        clock = rank
      end
      started[#started + 1] = job_id
      started[#started + 1] = tostring(rank)
    else
      passed = passed + 1
    end
  end
  offset = offset + #ranked / 2 - moved
end
redis.call('SET', clock_key, clock)
return started
"""
)
_TAKE_SCRIPT = AsyncScript(None, _TAKE.encode())  # type: ignore[arg-type]  # bytes: no client needed

# KEYS: queue, in-progress key, retry key, job key, arq's abort set, waiting counts, then every
# admission key.
# ARGV: job id, now (ms), the in-progress key's fate ('' delete, else keep it that many ms),
# how the job ended ('done', 'retry' with ARGV[5] added to its score as arq does, or 'again':
# due again now, as when shutdown took it away; left at the running mark it would never run).
_FINISH = (
    """
local job_id, waiting_key = ARGV[1], KEYS[6]
"""
    + COUNT_WAITING
    + JOB_BODY
    + f"""
local function back_to_waiting()
  local body = job_body(KEYS[4])
  count_waiting(body and body['fl'], 1)
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if ARGV[4] == 'done' then
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('ZREM', KEYS[5], job_id)
  redis.call('ZREM', KEYS[1], job_id)
elseif ARGV[4] == 'retry' then
  redis.call('ZINCRBY', KEYS[1], ARGV[5], job_id)
  back_to_waiting()
else
  local score = redis.call('ZSCORE', KEYS[1], job_id)
  if score and tonumber(score) >= {RUNNING_MARK} then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], job_id)
    back_to_waiting()
  end
end
for i = 7, #KEYS do
  redis.call('ZREM', KEYS[i], job_id)
end
return 1
"""
)
_FINISH_SCRIPT = AsyncScript(None, _FINISH.encode())  # type: ignore[arg-type]  # bytes: no client needed


@dataclass(frozen=True, slots=True)
class Started:
    job_id: str
    rank: float


@dataclass(frozen=True, slots=True)
class Scheduler:
    """The take and release scripts for one queue and this deployment's provider capacities."""

    redis: Redis
    queue_name: str
    in_progress_ms: int
    # Admission tokens per provider whose servers all have a capacity: their sum.
    capacities: Mapping[str, int]

    async def take(self, *, now_ms: int, limit: int, scan: int) -> list[Started]:
        """Rank the jobs that came due, then start up to `limit` in fair order that fit."""
        pairs: list[str | int] = []
        for provider, capacity in sorted(self.capacities.items()):
            pairs += [provider, capacity]
        reply = await _TAKE_SCRIPT(
            keys=[
                self.queue_name,
                fair_clock(self.queue_name),
                fair_flows(self.queue_name),
                waiting_counts(self.queue_name),
            ],
            args=[
                now_ms,
                self.in_progress_ms,
                in_progress_key_prefix,
                job_key_prefix,
                limit,
                scan,
                self.in_progress_ms,
                *pairs,
            ],
            client=self.redis,
        )
        return [
            Started(job_id.decode(), float(rank))
            for job_id, rank in zip(reply[::2], reply[1::2], strict=True)
        ]

    async def finish(
        self,
        job_id: str,
        *,
        now_ms: int,
        done: bool,
        incr_score: int | None,
        keep_in_progress_ms: int | None,
    ) -> None:
        """What arq's `finish_job` does (without results: this queue keeps none), and the
        job's admission token back, in one round trip."""
        keys = [
            self.queue_name,
            in_progress_key_prefix + job_id,
            retry_key_prefix + job_id,
            job_key_prefix + job_id,
            abort_jobs_ss,
            waiting_counts(self.queue_name),
        ]
        keys += [admission_key(self.queue_name, p) for p in sorted(self.capacities)]
        how = "done" if done else "retry" if incr_score else "again"
        keep = "" if keep_in_progress_ms is None else str(keep_in_progress_ms)
        await _FINISH_SCRIPT(
            keys=keys, args=[job_id, now_ms, keep, how, incr_score or 0], client=self.redis
        )

    async def give_back_token(self, job_id: str) -> None:
        """A job arq ended on its own path (expired, unreadable): its token goes back."""
        if self.capacities:
            keys = [admission_key(self.queue_name, p) for p in sorted(self.capacities)]
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, job_id)
                await pipe.execute()


def provider_capacities(servers: Iterable[ConfiguredServer]) -> dict[str, int]:
    """Admission tokens per provider: the sum of its servers' capacities, when every one has
    a capacity (a server without one takes any number, so the provider is not limited)."""
    by_provider: dict[str, list[int]] = {}
    for server in servers:
        by_provider.setdefault(server.provider, []).append(server.capacity)
    return {
        provider: sum(capacities)
        for provider, capacities in by_provider.items()
        if all(capacity > 0 for capacity in capacities)
    }
