"""Submitting hands the job to Redis after the commit, and survives Redis being down."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from arq.connections import ArqRedis
from sqlalchemy.engine import URL

from api import submission
from api.main import create_app
from shared.job_contract import generation_job_id
from shared.queue import enqueue_generation
from shared.settings import Settings
from tests.api.conftest import create_model_version, create_user
from tests.support.auth import ADMIN_HEADERS


def _payload(user: dict[str, Any], model_version: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": user["id"], "model_version_id": model_version["id"], "prompt": "hi"}


async def test_a_pending_conversation_is_queued_with_its_trace(
    client: httpx.AsyncClient,
    settings: Settings,
    user: dict[str, Any],
    model_version: dict[str, Any],
) -> None:
    response = await client.post("/conversations", json=_payload(user, model_version))
    assert response.status_code == 202
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"])
    assert response.headers["X-Request-ID"]
    job_key = f"arq:job:{generation_job_id(uuid.UUID(body['id']))}"
    store = redis.Redis.from_url(settings.REDIS_URL)
    try:
        raw = await store.get(job_key)
        assert raw is not None
        assert body["trace_id"] in raw.decode()  # the traceparent rides in the job
        assert await store.zscore(settings.QUEUE_NAME, job_key.removeprefix("arq:job:")) is not None
    finally:
        await store.delete(job_key)
        await store.zrem(settings.QUEUE_NAME, job_key.removeprefix("arq:job:"))
        await store.aclose()


@pytest.fixture
async def no_redis_client(settings: Settings, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=ADMIN_HEADERS
        ) as client:
            yield client


async def test_redis_down_still_accepts_and_keeps_the_row(
    no_redis_client: httpx.AsyncClient,
) -> None:
    user = await create_user(no_redis_client)
    model_version = await create_model_version(no_redis_client)
    response = await no_redis_client.post("/conversations", json=_payload(user, model_version))
    assert response.status_code == 202
    polled = await no_redis_client.get(f"/conversations/{response.json()['id']}")
    assert polled.json()["status"] == "pending"


async def test_the_job_is_sent_only_when_the_row_is_visible_to_others(
    client: httpx.AsyncClient,
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    user: dict[str, Any],
    model_version: dict[str, Any],
) -> None:
    """As the job goes to Redis, another connection (a worker's) must already see the row."""
    dsn = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    seen: list[tuple[str, bool]] = []

    async def witnessed(pool: ArqRedis, conversation_id: uuid.UUID, **kwargs: Any) -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            visible = await conn.fetchval(
                "SELECT count(*) FROM conversation WHERE id = $1", conversation_id
            )
        finally:
            await conn.close()
        seen.append((str(conversation_id), visible == 1))
        return await enqueue_generation(pool, conversation_id, **kwargs)

    monkeypatch.setattr(submission, "enqueue_generation", witnessed)
    response = await client.post("/conversations", json=_payload(user, model_version))
    assert response.status_code == 202, response.text
    assert seen == [(response.json()["id"], True)]
