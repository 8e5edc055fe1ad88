"""The API shows each model server as the workers keep it in Redis: readiness details for the
admin and `/metrics` gauges, with a worker's held slot and its down mark, never credentials."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import cast

import httpx
import pytest
from redis.asyncio import Redis

from shared.llm.base import LLMClient
from shared.model_servers import configured_servers, slots_key
from shared.settings import Settings
from tests.api.conftest import client_of, running_app
from tests.support.auth import ADMIN_HEADERS
from worker.model_servers import ModelServers

CLIENT = cast(LLMClient, object())


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.usefixtures("clean_db")
async def test_readiness_and_metrics_show_each_servers_slots_and_health(
    settings: Settings, redis: Redis
) -> None:
    queue = f"test-server-status-{uuid.uuid4().hex}"
    async with running_app(
        settings,
        QUEUE_NAME=queue,
        OLLAMA_BASE_URL="http://user:secret@model-a:11434",
        OLLAMA_SERVERS="http://model-b:11434=3, http://model-c:11434=0",
        LLM_SERVER_CAPACITY=2,
    ) as app:
        # A worker of the same deployment: it holds a slot on model-a and finds model-b
        # refusing connections.
        worker = ModelServers(redis, lease_seconds=60)
        for server in configured_servers(app.state.settings):
            worker.add(server.provider, server.url, server.capacity, CLIENT, queue)
        a, b, c = worker.by_provider["ollama"]
        held = await worker.take("ollama", skip=frozenset({b.url, c.url}))
        assert held is not None
        assert held.server is a
        refused = await worker.take("ollama", skip=frozenset({a.url, c.url}))
        assert refused is not None
        await worker.refused(refused.server)
        await worker.give_back(refused)
        # A lease that ran out (its worker died) is no call in flight.
        await redis.zadd(slots_key(queue, "ollama", a.url), {"dead-worker": 1})

        async with client_of(app, None) as anonymous:
            probe = await anonymous.get("/health/ready")
        assert probe.json() == {"status": "ok"}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=ADMIN_HEADERS
        ) as admin:
            ready = await admin.get("/health/ready")
            metrics = (await admin.get("/metrics")).text
        await worker.give_back(held)

    # A server down makes nobody unready: it is reported.
    assert ready.status_code == 200
    assert ready.json()["model_servers"] == [
        {
            "provider": "ollama",
            "server": "model-a:11434",
            "capacity": 2,
            "in_flight": 1,
            "healthy": True,
        },
        {
            "provider": "ollama",
            "server": "model-b:11434",
            "capacity": 3,
            "in_flight": 0,
            "healthy": False,
        },
        # No capacity: no slots, so its calls are not counted across workers.
        {
            "provider": "ollama",
            "server": "model-c:11434",
            "capacity": 0,
            "in_flight": None,
            "healthy": True,
        },
    ]
    assert "secret" not in ready.text
    assert "secret" not in metrics
    for line in (
        'model_server_slots_held{provider="ollama",server="model-a:11434"} 1.0',
        'model_server_slots_held{provider="ollama",server="model-b:11434"} 0.0',
        'model_server_healthy{provider="ollama",server="model-a:11434"} 1.0',
        'model_server_healthy{provider="ollama",server="model-b:11434"} 0.0',
        'model_server_healthy{provider="ollama",server="model-c:11434"} 1.0',
        'model_server_capacity{provider="ollama",server="model-b:11434"} 3.0',
    ):
        assert line in metrics.splitlines()
    assert 'model_server_slots_held{provider="ollama",server="model-c:11434"}' not in metrics


@pytest.mark.usefixtures("clean_db")
async def test_metrics_without_redis_have_no_server_gauges_and_still_answer(
    settings: Settings,
) -> None:
    async with running_app(settings, REDIS_URL="redis://127.0.0.1:1/0") as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=ADMIN_HEADERS
        ) as admin:
            metrics = await admin.get("/metrics")
    assert metrics.status_code == 200
    assert "model_server_healthy{" not in metrics.text
