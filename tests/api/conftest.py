from __future__ import annotations

from typing import Any

import httpx
import pytest


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
