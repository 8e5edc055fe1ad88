"""The long-poll inside the API process: two reads of the row at most, none while waiting.

The app runs with its lifespan (so its one subscription is live); the worker's part is played
by writing the outcome and announcing it on the channel, as `worker/generation.py` does.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from api.long_poll import FinishedListener
from shared.completion import announce_finished
from shared.db import SessionFactory
from shared.lifecycle import Outcome
from shared.services import conversations as service
from shared.settings import Settings
from tests.factories import set_columns


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """Every read of a conversation's row the API makes, by id."""
    seen: list[uuid.UUID] = []
    original = service.read_conversation

    async def counting(*args: Any, conversation_id: uuid.UUID, **kwargs: Any) -> Any:
        seen.append(conversation_id)
        return await original(*args, conversation_id=conversation_id, **kwargs)

    monkeypatch.setattr(service, "read_conversation", counting)
    return seen


async def _pending(client: httpx.AsyncClient, user: dict[str, Any], model: dict[str, Any]) -> str:
    response = await client.post(
        "/conversations",
        json={"user_id": user["id"], "model_version_id": model["id"], "prompt": "wait for me"},
    )
    assert response.status_code == 202, response.text
    cid: str = response.json()["id"]
    return cid


async def _registered(app: FastAPI, cid: str) -> None:
    """Until the waiting request has registered with the process's listener."""
    listener: FinishedListener = app.state.finished_listener
    async with asyncio.timeout(10):
        while cid not in listener._waiters:
            await asyncio.sleep(0.005)


async def test_a_waiting_poll_reads_the_row_twice_and_wakes_on_the_announcement(
    app: FastAPI,
    client: httpx.AsyncClient,
    user: dict[str, Any],
    model_version: dict[str, Any],
    session_factory: SessionFactory,
    settings: Settings,
    reads: list[uuid.UUID],
) -> None:
    cid = await _pending(client, user, model_version)
    poll = asyncio.create_task(client.get(f"/conversations/{cid}", params={"wait": 60}))
    await _registered(app, cid)
    assert len(reads) == 1  # the first look; nothing more while it waits

    await set_columns(
        session_factory, uuid.UUID(cid), **Outcome.failed("llm_bad_request", "no").columns()
    )
    redis = Redis.from_url(settings.REDIS_URL)
    try:
        await announce_finished(redis, settings.QUEUE_NAME, uuid.UUID(cid))
    finally:
        await redis.aclose()
    response = await asyncio.wait_for(poll, 30)

    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert reads == [uuid.UUID(cid)] * 2
    assert cid not in app.state.finished_listener._waiters  # nothing left behind


async def test_without_an_announcement_the_poll_answers_after_the_wait_with_two_reads(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    model_version: dict[str, Any],
    reads: list[uuid.UUID],
) -> None:
    cid = await _pending(client, user, model_version)

    response = await client.get(f"/conversations/{cid}", params={"wait": 1})

    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    assert len(reads) == 2
