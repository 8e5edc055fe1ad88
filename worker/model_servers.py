"""Which model server a generation goes to, and how many requests each server has at once.

A provider may be served by several servers (`OLLAMA_SERVERS`, `OPENAI_SERVERS`, beside the
base URL). Each server with a capacity (`LLM_SERVER_CAPACITY`, or `url=N`) has a semaphore in
Redis shared by every worker: a sorted set of slot holders scored by their lease's end, so a
worker killed mid-call gives its slot back when the lease runs out, and a slot is never
counted twice. A generation takes a slot on the least busy healthy server; when every server
of its provider is full it takes none and waits (the attempt handed back, not spent). A server
that refuses connections is set aside for `DOWN_SECONDS` and the call goes to another one
within the same attempt; after that it is tried again.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.llm.base import LLMClient
from shared.metrics import Metrics

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
    down_until: float = 0.0
    in_flight: int = 0  # this process's calls, for servers without a capacity


@dataclass(frozen=True, slots=True)
class Slot:
    server: ModelServer
    holder: str | None  # None: the server has no capacity to count against


def server_label(url: str) -> str:
    """A server as metrics and logs name it: host and port, never credentials or a path."""
    return urlsplit(url).netloc.rpartition("@")[2] or url


@dataclass
class ModelServers:
    redis: Redis
    lease_seconds: float
    metrics: Metrics | None = None
    by_provider: dict[str, list[ModelServer]] = field(default_factory=dict)

    def add(self, provider: str, url: str, capacity: int, client: LLMClient, queue: str) -> None:
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        key = f"{queue}:llm-slots:{provider}:{digest}"
        server = ModelServer(provider, url, capacity, client, key)
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
        every one is full. When all are down, the least recently refused is tried anyway."""
        servers = [s for s in self.by_provider.get(provider, []) if s.url not in skip]
        now = time.monotonic()
        healthy = [s for s in servers if s.down_until <= now]
        candidates = healthy or sorted(servers, key=lambda s: s.down_until)[:1]
        for server in await self._least_busy_first(candidates):
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

    def refused(self, server: ModelServer) -> None:
        """The server refused a connection: leave it out for a while."""
        server.down_until = time.monotonic() + DOWN_SECONDS
        if self.metrics is not None:
            labels = (server.provider, server_label(server.url))
            self.metrics.model_server_refusals_total.labels(*labels).inc()

    async def busy(self, server: ModelServer) -> int:
        """Requests in flight to `server`: every worker's where it has a capacity."""
        if server.capacity == 0:
            return server.in_flight
        return int(await self.redis.zcard(server.slots_key))

    async def _least_busy_first(self, servers: list[ModelServer]) -> list[ModelServer]:
        if len(servers) < 2:
            return servers
        capped = [s for s in servers if s.capacity]
        loads: dict[str, float] = {s.url: float(s.in_flight) for s in servers if not s.capacity}
        if capped:
            async with self.redis.pipeline(transaction=False) as pipe:
                for server in capped:
                    pipe.zcard(server.slots_key)
                counts = await pipe.execute()
            for server, count in zip(capped, counts, strict=True):
                loads[server.url] = int(count) / server.capacity
        return sorted(servers, key=lambda s: loads[s.url])
