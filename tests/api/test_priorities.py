"""Priorities at the API: asked for on submit, bounded by the key's ceiling, shown on read,
and carried into the job so the scheduler can place it."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from shared.settings import Settings
from tests.api.conftest import assert_error, client_of, queued_job


def _payload(user: dict[str, Any], model_version: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"user_id": user["id"], "model_version_id": model_version["id"], "prompt": "hi", **extra}


async def _key(client: httpx.AsyncClient, user_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/users/{user_id}/api-keys", json=body)


async def test_interactive_is_the_default_and_batch_is_kept(
    client: httpx.AsyncClient,
    settings: Settings,
    user: dict[str, Any],
    model_version: dict[str, Any],
) -> None:
    plain = await client.post("/conversations", json=_payload(user, model_version))
    batch = await client.post(
        "/conversations", json=_payload(user, model_version, priority="batch")
    )
    assert (plain.status_code, batch.status_code) == (202, 202)
    assert plain.json()["priority"] == "interactive"
    assert batch.json()["priority"] == "batch"
    read = await client.get(f"/conversations/{batch.json()['id']}")
    assert read.json()["priority"] == "batch"
    # The job names its user's flow at that priority, its cost and its provider.
    job = await queued_job(settings, batch.json()["id"])
    assert job["fl"] == f"{user['id']}:batch"
    assert job["c"] == settings.SCHEDULER_BATCH_COST
    assert job["p"] == model_version["provider"]
    assert (await queued_job(settings, plain.json()["id"]))["c"] == 1


async def test_an_unknown_priority_is_a_422(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    response = await client.post(
        "/conversations", json=_payload(user, model_version, priority="urgent")
    )
    assert_error(response, 422, "validation_error")


async def test_a_batch_key_submits_at_batch_whatever_it_asks(
    app: FastAPI,
    client: httpx.AsyncClient,
    user: dict[str, Any],
    model_version: dict[str, Any],
) -> None:
    made = await _key(client, user["id"], max_priority="batch")
    assert made.status_code == 201
    assert made.json()["max_priority"] == "batch"
    async with client_of(app, made.json()["key"]) as batch_client:
        asked = await batch_client.post(
            "/conversations",
            json={
                "model_version_id": model_version["id"],
                "prompt": "hi",
                "priority": "interactive",
            },
        )
    assert asked.status_code == 202
    assert asked.json()["priority"] == "batch"


async def test_a_key_makes_no_key_above_its_own_ceiling(
    app: FastAPI, client: httpx.AsyncClient, user: dict[str, Any]
) -> None:
    batch_key = (await _key(client, user["id"], max_priority="batch")).json()["key"]
    async with client_of(app, batch_key) as batch_client:
        refused = await _key(batch_client, user["id"], max_priority="interactive")
        inherited = await _key(batch_client, user["id"])
    assert_error(refused, 403, "forbidden")
    assert inherited.status_code == 201
    assert inherited.json()["max_priority"] == "batch"
    # The admin's keys default to interactive.
    assert (await _key(client, user["id"])).json()["max_priority"] == "interactive"


async def test_conversations_can_be_listed_by_priority(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    for priority in ("batch", "interactive", "batch"):
        body = _payload(user, model_version, priority=priority)
        assert (await client.post("/conversations", json=body)).status_code == 202
    batch = await client.get("/conversations", params={"priority": "batch"})
    assert batch.headers["X-Total-Count"] == "2"
    assert {c["priority"] for c in batch.json()} == {"batch"}
    unknown = await client.get("/conversations", params={"priority": "urgent"})
    assert_error(unknown, 422, "validation_error")
