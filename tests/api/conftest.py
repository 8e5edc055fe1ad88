from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI

from api.main import create_app
from shared.job_contract import generation_job_id
from shared.settings import Settings
from tests.support.auth import bearer


async def create_user(client: httpx.AsyncClient, email: str = "ana@example.com") -> dict[str, Any]:
    response = await client.post("/users", json={"email": email})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_model_version(
    client: httpx.AsyncClient,
    *,
    provider: str = "ollama",
    model_name: str = "llama3.2:3b",
    **extra: Any,
) -> dict[str, Any]:
    payload = {"provider": provider, "model_name": model_name, "version_tag": "v1", **extra}
    response = await client.post("/model-versions", json=payload)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error contract: exactly code, message and details."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


@pytest.fixture
async def user(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_user(client)


@pytest.fixture
async def model_version(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_model_version(client)


async def queued_job(settings: Settings, conversation_id: str) -> dict[str, Any]:
    """The payload of a conversation's job as Redis holds it (it must be queued)."""
    store = redis.Redis.from_url(settings.REDIS_URL)
    try:
        raw = await store.get(f"arq:job:{generation_job_id(uuid.UUID(conversation_id))}")
    finally:
        await store.aclose()
    assert raw is not None
    body: dict[str, Any] = json.loads(raw)
    return body


async def issue_key(client: httpx.AsyncClient, user_id: str, name: str | None = None) -> str:
    """A new API key for `user_id`, issued through the API (the client carries the admin key)."""
    body = {} if name is None else {"name": name}
    response = await client.post(f"/users/{user_id}/api-keys", json=body)
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


@asynccontextmanager
async def client_of(app: FastAPI, key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app that presents `key` (or no key at all)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {} if key is None else bearer(key)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as client:
        yield client


@asynccontextmanager
async def running_app(settings: Settings, **overrides: Any) -> AsyncIterator[FastAPI]:
    """An app with some settings changed, its lifespan running."""
    application = create_app(settings.model_copy(update=overrides))
    async with application.router.lifespan_context(application):
        yield application
