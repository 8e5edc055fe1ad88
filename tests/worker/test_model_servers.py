"""Model-server slots on real Redis: a capacity no number of workers exceeds, the least busy
server first, a refused server set aside (by every worker), and a dead worker's slot back
after its lease."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import cast

import pytest
from redis.asyncio import Redis

from shared.llm.base import LLMClient
from shared.metrics import create_metrics
from shared.settings import parse_servers
from tests.support.log_capture import make_settings
from worker import model_servers
from worker.model_servers import ModelServers

CLIENT = cast(LLMClient, object())


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _servers(redis: Redis, *capacities: int, lease: float = 60.0) -> ModelServers:
    """`ModelServers` of a fresh queue name: as many servers as capacities (another worker is
    another `ModelServers` on the same queue)."""
    servers = ModelServers(redis, lease_seconds=lease)
    queue = f"test-slots-{uuid.uuid4().hex}"
    for n, capacity in enumerate(capacities):
        servers.add("ollama", f"http://model-{n}:11434", capacity, CLIENT, queue)
    return servers


def _twin(servers: ModelServers, redis: Redis) -> ModelServers:
    """The same servers as another worker process sees them."""
    other = ModelServers(redis, lease_seconds=servers.lease_seconds)
    for server in servers.by_provider["ollama"]:
        other.by_provider.setdefault("ollama", []).append(
            model_servers.ModelServer(
                server.provider,
                server.url,
                server.capacity,
                CLIENT,
                server.slots_key,
                server.down_key,
            )
        )
    return other


async def test_no_more_slots_than_the_capacity_across_workers(redis: Redis) -> None:
    one = _servers(redis, 2)
    two = _twin(one, redis)
    first, second = await one.take("ollama"), await two.take("ollama")
    assert first is not None
    assert second is not None
    assert await one.take("ollama") is None
    assert await two.take("ollama") is None
    await two.give_back(second)
    again = await one.take("ollama")
    assert again is not None
    assert await one.busy(again.server) == 2


async def test_the_least_busy_server_is_taken_first(redis: Redis) -> None:
    servers = _servers(redis, 2, 2)
    a, b = servers.by_provider["ollama"]
    taken = [await servers.take("ollama") for _ in range(4)]
    assert [slot.server.url for slot in taken if slot] == [a.url, b.url, a.url, b.url]
    assert await servers.take("ollama") is None


async def test_a_refused_server_is_set_aside_then_tried_again(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(model_servers.time, "monotonic", lambda: clock[0])
    servers = _servers(redis, 0, 0)
    a, b = servers.by_provider["ollama"]
    await servers.refused(a)
    for _ in range(3):
        slot = await servers.take("ollama")
        assert slot is not None
        assert slot.server is b
        await servers.give_back(slot)
    clock[0] += model_servers.DOWN_SECONDS
    slot = await servers.take("ollama", skip=frozenset({b.url}))
    assert slot is not None
    assert slot.server is a


async def test_when_every_server_is_down_the_one_refused_longest_ago_is_tried(
    redis: Redis,
) -> None:
    servers = _servers(redis, 0, 0)
    a, b = servers.by_provider["ollama"]
    await servers.refused(b)
    await asyncio.sleep(0.01)
    await servers.refused(a)
    slot = await servers.take("ollama")
    assert slot is not None
    assert slot.server is b


async def _refuse(servers: ModelServers, url: str) -> None:
    """What a generation does when the server at `url` refuses: mark it, give the slot back."""
    server = next(s for s in servers.by_provider["ollama"] if s.url == url)
    slot = await servers.take(
        "ollama", skip=frozenset(s.url for s in servers.by_provider["ollama"]) - {url}
    )
    assert slot is not None
    assert slot.server is server
    await servers.refused(server)
    await servers.give_back(slot)


async def test_a_server_one_worker_found_refusing_is_left_out_by_the_others(
    redis: Redis,
) -> None:
    one = _servers(redis, 0, 2)
    two = _twin(one, redis)
    a, b = one.by_provider["ollama"]
    await _refuse(one, a.url)
    mark = await redis.get(a.down_key)
    assert mark is not None
    assert json.loads(mark)["reason"] == "connection_refused"
    for _ in range(3):
        slot = await two.take("ollama")
        assert slot is not None
        assert slot.server.url == b.url
        await two.give_back(slot)
    # Without a choice (every other server skipped) the marked one is still tried.
    slot = await two.take("ollama", skip=frozenset({b.url}))
    assert slot is not None
    assert slot.server.url == a.url


async def test_another_workers_mark_runs_out_and_the_server_is_tried_again(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_servers, "DOWN_SECONDS", 0.3)
    one = _servers(redis, 0, 0)
    two = _twin(one, redis)
    a, b = one.by_provider["ollama"]
    await _refuse(one, a.url)
    slot = await two.take("ollama")
    assert slot is not None
    assert slot.server.url == b.url  # held: a is the least busy once it is back
    async with asyncio.timeout(5):
        while await redis.exists(a.down_key):
            await asyncio.sleep(0.05)
    again = await two.take("ollama")
    assert again is not None
    assert again.server.url == a.url


async def test_when_every_worker_marked_every_server_the_first_mark_to_end_is_tried(
    redis: Redis,
) -> None:
    one = _servers(redis, 0, 0)
    two, three = _twin(one, redis), _twin(one, redis)
    a, b = one.by_provider["ollama"]
    await _refuse(one, b.url)
    await asyncio.sleep(0.01)
    await _refuse(two, a.url)
    slot = await three.take("ollama")
    assert slot is not None
    assert slot.server.url == b.url


async def test_without_redis_servers_without_a_capacity_are_still_chosen() -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        servers = _servers(unreachable, 0, 0)
        a, b = servers.by_provider["ollama"]
        await servers.refused(a)  # its mark cannot be written: this process still knows
        slot = await servers.take("ollama")
        assert slot is not None
        assert slot.server is b
        await servers.give_back(slot)
    finally:
        await unreachable.aclose()


async def test_a_slot_whose_holder_died_comes_back_after_its_lease(redis: Redis) -> None:
    dead = _servers(redis, 1, lease=0.3)
    assert await dead.take("ollama") is not None  # never given back: the worker was killed
    alive = _twin(dead, redis)
    assert await alive.take("ollama") is None
    async with asyncio.timeout(5):
        while (slot := await alive.take("ollama")) is None:
            await asyncio.sleep(0.05)
    assert slot.holder is not None


async def test_servers_without_a_capacity_are_never_full(redis: Redis) -> None:
    servers = _servers(redis, 0)
    slots = [await servers.take("ollama") for _ in range(50)]
    assert all(slot is not None for slot in slots)
    assert not await redis.exists(servers.by_provider["ollama"][0].slots_key)


def test_the_servers_of_a_provider_come_from_the_settings() -> None:
    settings = make_settings(
        OLLAMA_BASE_URL="http://a:11434",
        OLLAMA_SERVERS="http://b:11434=2, http://c:11434/ ,http://a:11434=9",
        LLM_SERVER_CAPACITY=4,
    )
    assert settings.model_servers("ollama") == [
        ("http://a:11434", 4),
        ("http://b:11434", 2),
        ("http://c:11434", 4),
    ]
    assert settings.model_servers("openai") == []
    assert parse_servers("") == []
    for bad in ("b:11434", "http://b=x", "ftp://b"):
        with pytest.raises(ValueError, match="expected"):
            parse_servers(bad)


async def test_each_server_shows_its_capacity_calls_refusals_and_waits_in_metrics(
    redis: Redis,
) -> None:
    metrics = create_metrics(process_metrics=False)
    servers = ModelServers(redis, lease_seconds=60, metrics=metrics)
    queue = f"test-slots-{uuid.uuid4().hex}"
    servers.add("ollama", "http://user:secret@model-a:11434/x", 1, CLIENT, queue)
    slot = await servers.take("ollama")
    assert slot is not None
    assert await servers.take("ollama") is None
    await servers.refused(slot.server)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    server = {"provider": "ollama", "server": "model-a:11434"}
    assert value("model_server_capacity", **server) == 1
    assert value("model_server_in_flight", **server) == 1
    assert value("model_server_refusals_total", **server) == 1
    assert value("model_server_capacity_waits_total", provider="ollama") == 1
    await servers.give_back(slot)
    assert value("model_server_in_flight", **server) == 0
