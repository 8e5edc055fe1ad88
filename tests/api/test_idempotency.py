"""`Idempotency-Key` on POST /conversations: a retried submission makes nothing new."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from fastapi import FastAPI
from sqlalchemy import text

from shared.db import SessionFactory
from shared.job_contract import generation_job_id
from tests.api.conftest import assert_error, client_of, create_user, issue_key

RACERS = 10


@pytest.fixture
def queue(app: FastAPI) -> ArqRedis:
    pool: ArqRedis = app.state.submissions.queue
    return pool


def _body(user: dict[str, Any], model_version: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user["id"],
        "model_version_id": model_version["id"],
        "prompt": "once, please",
        **extra,
    }


async def _submit(
    client: httpx.AsyncClient, body: dict[str, Any], key: str | None
) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return await client.post("/conversations", json=body, headers=headers)


async def _rows(session_factory: SessionFactory) -> int:
    async with session_factory() as session:
        return int((await session.execute(text("SELECT count(*) FROM conversation"))).scalar_one())


async def test_a_retry_with_the_same_key_and_body_gets_the_same_conversation_and_queues_nothing(
    client: httpx.AsyncClient,
    session_factory: SessionFactory,
    queue: ArqRedis,
    user: dict[str, Any],
    model_version: dict[str, Any],
) -> None:
    body = _body(user, model_version)
    first = await _submit(client, body, "retry-1")
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    cid = uuid.UUID(first.json()["id"])
    # The job the first made is taken away, as a worker would: a replay must not send another.
    await queue.delete(f"arq:job:{generation_job_id(cid)}")
    await queue.zrem(queue.default_queue_name, generation_job_id(cid))
    again = await _submit(client, body, "retry-1")
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert again.json() == first.json()
    assert await _rows(session_factory) == 1
    assert await queue.zscore(queue.default_queue_name, generation_job_id(cid)) is None
    assert not await queue.exists(f"arq:job:{generation_job_id(cid)}")
    # Without a key, the same body is a new conversation.
    assert (await _submit(client, body, None)).json()["id"] != str(cid)


async def test_a_replay_answers_the_conversation_as_it_is_now_with_the_original_status(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    stored = _body(user, model_version, response="given")
    first = await _submit(client, stored, "stored-1")
    assert first.status_code == 201
    edited = await client.patch(f"/conversations/{first.json()['id']}", json={"response": "new"})
    assert edited.status_code == 200
    again = await _submit(client, stored, "stored-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["response"] == "new"


async def test_the_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient,
    session_factory: SessionFactory,
    user: dict[str, Any],
    model_version: dict[str, Any],
) -> None:
    first = await _submit(client, _body(user, model_version), "changed-1")
    other = await _submit(client, _body(user, model_version, prompt="something else"), "changed-1")
    body = assert_error(other, 422, "validation_error")
    assert body["details"] == {"header": "Idempotency-Key", "conversation_id": first.json()["id"]}
    assert await _rows(session_factory) == 1


async def test_concurrent_submissions_with_one_key_store_one_conversation(
    client: httpx.AsyncClient,
    session_factory: SessionFactory,
    user: dict[str, Any],
    model_version: dict[str, Any],
) -> None:
    body = _body(user, model_version)
    responses = await asyncio.gather(*(_submit(client, body, "race-1") for _ in range(RACERS)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == RACERS - 1
    assert await _rows(session_factory) == 1


async def test_keys_belong_to_their_user(
    app: FastAPI, client: httpx.AsyncClient, model_version: dict[str, Any]
) -> None:
    ana = await create_user(client, "ana@example.com")
    bob = await create_user(client, "bob@example.com")
    body = {"model_version_id": model_version["id"], "prompt": "mine"}
    async with (
        client_of(app, await issue_key(client, ana["id"])) as as_ana,
        client_of(app, await issue_key(client, bob["id"])) as as_bob,
    ):
        mine = await _submit(as_ana, body, "shared-name")
        theirs = await _submit(as_bob, body, "shared-name")
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    # The admin acting for ana shares ana's keys.
    again = await _submit(client, {**body, "user_id": ana["id"]}, "shared-name")
    assert again.json()["id"] == mine.json()["id"]


async def test_a_key_past_its_window_or_of_a_deleted_conversation_starts_afresh(
    client: httpx.AsyncClient,
    session_factory: SessionFactory,
    user: dict[str, Any],
    model_version: dict[str, Any],
) -> None:
    body = _body(user, model_version)
    old = (await _submit(client, body, "old-1")).json()["id"]
    async with session_factory() as session:
        await session.execute(
            text("UPDATE conversation SET created_at = now() - interval '25 hours' WHERE id = :id"),
            {"id": old},
        )
        await session.commit()
    fresh = await _submit(client, body, "old-1")
    assert fresh.status_code == 202
    assert "Idempotent-Replayed" not in fresh.headers
    assert fresh.json()["id"] != old
    assert (await client.delete(f"/conversations/{fresh.json()['id']}")).status_code == 204
    after_delete = await _submit(client, body, "old-1")
    assert after_delete.json()["id"] not in (old, fresh.json()["id"])


@pytest.mark.parametrize("bad", ["", "x" * 256, "has space", "tab\tkey", "ünïcode"])
async def test_a_malformed_key_is_a_validation_error(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any], bad: str
) -> None:
    headers = {"Idempotency-Key": bad.encode()}
    response = await client.post("/conversations", json=_body(user, model_version), headers=headers)
    body = assert_error(response, 422, "validation_error")
    assert "idempotency-key" in str(body["details"]).lower()
