"""Which model server a generation goes to, and how many requests each server has at once.

A provider may be served by several servers (`OLLAMA_SERVERS`, `OPENAI_SERVERS`, beside the
base URL). Each server with a capacity (`LLM_SERVER_CAPACITY`, or `url=N`) has a semaphore in
Redis shared by every worker: a sorted set of slot holders scored by their lease's end, so a
worker killed mid-call gives its slot back when the lease runs out, and a slot is never
counted twice. A generation takes a slot on the least busy healthy server; when every server
of its provider is full it takes none and waits (the attempt handed back, not spent). A server
that refuses connections is set aside for `DOWN_SECONDS` and the call goes to another one
within the same attempt; after that it is tried again. The mark is kept in Redis too (a key
that expires with it), so every worker leaves the server out, and the API can show it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from loguru import logger
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from shared.llm.base import LLMClient
from shared.metrics import Metrics
from shared.model_servers import down_key, server_label, slots_key

# How long a refused server is left out before it is tried again.
DOWN_SECONDS = 10.0

# KEYS[1] the server's slots; ARGV: capacity, lease (ms), holder. Time is the Redis server's,
# so workers' clocks need not agree. 1: taken, 0: full.
_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
_TAKE_SCRIPT = AsyncScript(None, _TAKE.encode())  # type: ignore[arg-type]  # bytes: no client needed


@dataclass
class ModelServer:
    provider: str
    url: str
    capacity: int  # 0: no limit
    client: LLMClient
    slots_key: str
    down_key: str = ""
    down_until: float = 0.0
    in_flight: int = 0  # this process's calls, for servers without a capacity


@dataclass(frozen=True, slots=True)
class Slot:
    server: ModelServer
    holder: str | None  # None: the server has no capacity to count against


@dataclass
class ModelServers:
    redis: Redis
    lease_seconds: float
    metrics: Metrics | None = None
    by_provider: dict[str, list[ModelServer]] = field(default_factory=dict)

    def add(self, provider: str, url: str, capacity: int, client: LLMClient, queue: str) -> None:
        server = ModelServer(
            provider,
            url,
            capacity,
            client,
            slots_key(queue, provider, url),
            down_key(queue, provider, url),
        )
        self.by_provider.setdefault(provider, []).append(server)
        if self.metrics is not None:
            self.metrics.model_server_capacity.labels(provider, server_label(url)).set(capacity)

    def _in_flight(self, server: ModelServer, change: int) -> None:
        server.in_flight += change
        if self.metrics is not None:
            labels = (server.provider, server_label(server.url))
            self.metrics.model_server_in_flight.labels(*labels).set(server.in_flight)

    def serves(self, provider: str) -> bool:
        return bool(self.by_provider.get(provider))

    async def take(self, provider: str, *, skip: frozenset[str] = frozenset()) -> Slot | None:
        """A slot on the least busy healthy server of `provider` (not in `skip`), or None when
        every one is full. A server is down when this worker or another one found it refusing
        lately; when all are down, the one whose mark ends first is tried anyway."""
        servers = [s for s in self.by_provider.get(provider, []) if s.url not in skip]
        down_for, loads = await self._look(servers)
        healthy = [s for s in servers if down_for[s.url] <= 0]
        candidates = healthy or sorted(servers, key=lambda s: down_for[s.url])[:1]
        for server in sorted(candidates, key=lambda s: loads[s.url]):
            if server.capacity == 0:
                self._in_flight(server, 1)
                return Slot(server, None)
            holder = uuid.uuid4().hex
            args: list[int | str] = [server.capacity, int(self.lease_seconds * 1000), holder]
            if await _TAKE_SCRIPT(keys=[server.slots_key], args=args, client=self.redis):
                self._in_flight(server, 1)
                return Slot(server, holder)
        if self.metrics is not None:
            self.metrics.model_server_capacity_waits_total.labels(provider).inc()
        return None

    async def give_back(self, slot: Slot) -> None:
        self._in_flight(slot.server, -1)
        if slot.holder is not None:
            await self.redis.zrem(slot.server.slots_key, slot.holder)

    async def refused(self, server: ModelServer) -> None:
        """The server refused a connection: leave it out for a while, in this process and, by
        a key in Redis that expires with the mark, in every worker. Best effort: without
        Redis, this process still knows."""
        server.down_until = time.monotonic() + DOWN_SECONDS
        if self.metrics is not None:
            labels = (server.provider, server_label(server.url))
            self.metrics.model_server_refusals_total.labels(*labels).inc()
        mark = json.dumps({"reason": "connection_refused", "at": round(time.time(), 3)})
        try:
            await self.redis.psetex(server.down_key, int(DOWN_SECONDS * 1000), mark)
        except (RedisError, OSError) as exc:
            logger.warning("model_server_down_mark_failed", error=type(exc).__name__)

    def failed(self, server: ModelServer, code: str) -> None:
        """A call to the server failed after reaching it (counted; the server stays in)."""
        if self.metrics is not None:
            labels = (server.provider, server_label(server.url), code)
            self.metrics.model_server_errors_total.labels(*labels).inc()

    async def busy(self, server: ModelServer) -> int:
        """Requests in flight to `server`: every worker's where it has a capacity."""
        if server.capacity == 0:
            return server.in_flight
        return int(await self.redis.zcard(server.slots_key))

    async def _look(self, servers: list[ModelServer]) -> tuple[dict[str, float], dict[str, float]]:
        """Seconds each server stays down (0: healthy; this process's mark or any worker's
        in Redis) and its load (slots held / capacity, or this process's calls without a
        capacity), in one round trip. With one server there is no choice and no look."""
        now = time.monotonic()
        down_for = {s.url: max(s.down_until - now, 0.0) for s in servers}
        loads: dict[str, float] = {s.url: float(s.in_flight) for s in servers}
        if len(servers) < 2:
            return down_for, loads
        capped = [s for s in servers if s.capacity]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for server in servers:
                    pipe.pttl(server.down_key)
                for server in capped:
                    pipe.zcard(server.slots_key)
                found = await pipe.execute()
        except (RedisError, OSError):
            if capped:
                raise  # slots cannot be counted: the caller waits as if full
            return down_for, loads  # no capacity to count: this process's view will do
        for server, ttl in zip(servers, found[: len(servers)], strict=True):
            down_for[server.url] = max(down_for[server.url], int(ttl) / 1000)
        for server, count in zip(capped, found[len(servers) :], strict=True):
            loads[server.url] = int(count) / server.capacity
        return down_for, loads
