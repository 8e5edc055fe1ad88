"""The model servers as both processes name them, and how they are doing, read from Redis.

The worker (`worker/model_servers.py`) keeps each server's slots and its down mark in Redis
under the keys named here; the API reads the same keys for readiness and `/metrics`. A server
is named by provider and a digest of its URL in keys, and by host and port in metrics, logs
and answers: never by its full URL, which may carry credentials.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.llm.registry import SUPPORTED_PROVIDERS
from shared.settings import Settings


def server_label(url: str) -> str:
    """A server as metrics and logs name it: host and port, never credentials or a path."""
    return urlsplit(url).netloc.rpartition("@")[2] or url


def _digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def slots_key(queue: str, provider: str, url: str) -> str:
    """The server's slots: a sorted set of holders scored by their lease's end (ms, Redis
    time)."""
    return f"{queue}:llm-slots:{provider}:{_digest(url)}"


def down_key(queue: str, provider: str, url: str) -> str:
    """Present while the server is set aside (it refused a connection); expires by itself."""
    return f"{queue}:llm-down:{provider}:{_digest(url)}"


@dataclass(frozen=True, slots=True)
class ConfiguredServer:
    provider: str
    url: str
    capacity: int  # 0: no limit


def configured_servers(settings: Settings) -> list[ConfiguredServer]:
    """Every model server of every provider the settings configure, as the worker builds
    them."""
    return [
        ConfiguredServer(provider, url, capacity)
        for provider in sorted(SUPPORTED_PROVIDERS)
        for url, capacity in settings.model_servers(provider)
    ]


@dataclass(frozen=True, slots=True)
class ServerStatus:
    provider: str
    server: str  # host:port
    capacity: int
    in_flight: int | None  # slots held by every worker; None: no capacity, so not counted
    healthy: bool

    def details(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "server": self.server,
            "capacity": self.capacity,
            "in_flight": self.in_flight,
            "healthy": self.healthy,
        }


# KEYS: slots, down mark, for each server. Per server: unexpired slots (score after now, in
# Redis time, as the worker's leases are) and whether the down mark is there. Reads only.
_READ = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[i], '(' .. ms, '+inf')
  out[#out + 1] = redis.call('EXISTS', KEYS[i + 1])
end
return out
"""
_READ_SCRIPT = AsyncScript(None, _READ.encode())  # type: ignore[arg-type]  # bytes: no client needed


async def read_server_status(
    redis: Redis, queue: str, servers: list[ConfiguredServer]
) -> list[ServerStatus]:
    """In-flight, capacity and health of every server: one round trip to Redis (a script of
    two lookups per server), whatever the queue holds. Redis errors propagate."""
    if not servers:
        return []
    keys: list[str] = []
    for s in servers:
        keys += [slots_key(queue, s.provider, s.url), down_key(queue, s.provider, s.url)]
    found = await _READ_SCRIPT(keys=keys, args=[], client=redis)
    return [
        ServerStatus(
            provider=s.provider,
            server=server_label(s.url),
            capacity=s.capacity,
            in_flight=int(found[2 * n]) if s.capacity else None,
            healthy=not int(found[2 * n + 1]),
        )
        for n, s in enumerate(servers)
    ]
