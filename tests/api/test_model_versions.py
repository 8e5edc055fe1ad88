from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.api.conftest import assert_error, create_model_version


async def test_create_returns_the_model_version(client: httpx.AsyncClient) -> None:
    body = await create_model_version(client, max_tokens_cap=256, default_temperature=0.3)
    assert body["provider"] == "ollama"
    assert body["model_name"] == "llama3.2:3b"
    assert body["version_tag"] == "v1"
    assert body["max_tokens_cap"] == 256
    assert body["default_temperature"] == 0.3
    assert body["is_active"] is True


async def test_same_active_triple_is_a_conflict(
    client: httpx.AsyncClient, model_version: dict[str, Any]
) -> None:
    payload = {"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": "v1"}
    assert_error(await client.post("/model-versions", json=payload), 409, "conflict")


async def test_a_deleted_triple_can_be_registered_again(
    client: httpx.AsyncClient, model_version: dict[str, Any]
) -> None:
    assert (await client.delete(f"/model-versions/{model_version['id']}")).status_code == 204
    again = await create_model_version(client)
    assert again["id"] != model_version["id"]


@pytest.mark.parametrize(
    "payload",
    [
        {"provider": "", "model_name": "m", "version_tag": "v"},
        {"provider": "p" * 129, "model_name": "m", "version_tag": "v"},
        {"provider": "p", "model_name": "m"},
        {"provider": "p", "model_name": "m", "version_tag": "v", "max_tokens_cap": 0},
        {"provider": "p", "model_name": "m", "version_tag": "v", "default_temperature": 2.5},
        {"provider": "p", "model_name": "m", "version_tag": "v", "id": str(uuid.uuid4())},
    ],
)
async def test_invalid_payloads_are_rejected(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    assert_error(await client.post("/model-versions", json=payload), 422, "validation_error")


async def test_get_and_not_found(client: httpx.AsyncClient, model_version: dict[str, Any]) -> None:
    assert (await client.get(f"/model-versions/{model_version['id']}")).json() == model_version
    body = assert_error(await client.get(f"/model-versions/{uuid.uuid4()}"), 404, "not_found")
    assert body["message"] == "Model version not found"


async def test_list_orders_by_model_name(client: httpx.AsyncClient) -> None:
    for name in ("b", "c", "a"):
        await create_model_version(client, model_name=name)
    response = await client.get("/model-versions", params={"order_by": "model_name_desc"})
    assert [m["model_name"] for m in response.json()] == ["c", "b", "a"]
    assert response.headers["X-Total-Count"] == "3"
    assert_error(
        await client.get("/model-versions", params={"limit": 500}), 422, "validation_error"
    )


async def test_patch_updates_fields_and_guards_uniqueness(client: httpx.AsyncClient) -> None:
    first = await create_model_version(client, model_name="a")
    second = await create_model_version(client, model_name="b")
    response = await client.patch(
        f"/model-versions/{first['id']}", json={"version_tag": "v2", "max_tokens_cap": 64}
    )
    assert response.status_code == 200
    assert response.json()["version_tag"] == "v2"
    assert response.json()["max_tokens_cap"] == 64
    clash = await client.patch(
        f"/model-versions/{second['id']}", json={"model_name": "a", "version_tag": "v2"}
    )
    assert_error(clash, 409, "conflict")
    nulled = await client.patch(f"/model-versions/{second['id']}", json={"provider": None})
    assert_error(nulled, 422, "validation_error")
    missing = await client.patch(f"/model-versions/{uuid.uuid4()}", json={"version_tag": "x"})
    assert_error(missing, 404, "not_found")


async def test_delete_hides_the_model_version(
    client: httpx.AsyncClient, model_version: dict[str, Any]
) -> None:
    assert (await client.delete(f"/model-versions/{model_version['id']}")).status_code == 204
    assert_error(await client.get(f"/model-versions/{model_version['id']}"), 404, "not_found")
    assert (await client.get("/model-versions")).json() == []
    assert_error(await client.delete(f"/model-versions/{uuid.uuid4()}"), 404, "not_found")
