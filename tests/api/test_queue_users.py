"""`GET /queue/users`: per user, the conversations pending and running, for the admin only."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from shared.db import SessionFactory
from shared.repositories.queue_counts import page_statement
from shared.schemas.common import Page
from tests.api.conftest import assert_error, client_of, create_user, issue_key
from tests.factories import set_columns


async def _submit(
    client: httpx.AsyncClient, user: dict[str, Any], model: dict[str, Any], **extra: Any
) -> uuid.UUID:
    payload = {"user_id": user["id"], "model_version_id": model["id"], "prompt": "p", **extra}
    response = await client.post("/conversations", json=payload)
    assert response.status_code in (201, 202), response.text
    return uuid.UUID(response.json()["id"])


async def test_the_admin_sees_each_users_pending_and_running_most_unfinished_first(
    app: FastAPI,
    client: httpx.AsyncClient,
    model_version: dict[str, Any],
    session_factory: SessionFactory,
) -> None:
    ana, bruno, carla, dora = [
        await create_user(client, f"{name}@example.com")
        for name in ("ana", "bruno", "carla", "dora")
    ]
    # ana: four submitted, one running, one cancelled -> 2 pending, 1 running.
    ana_ids = [await _submit(client, ana, model_version) for _ in range(4)]
    await set_columns(session_factory, ana_ids[0], status="running")
    await set_columns(session_factory, ana_ids[1], status="cancelled")
    # bruno: three pending -> as many unfinished as ana, more of them waiting.
    for _ in range(3):
        await _submit(client, bruno, model_version)
    # carla: one stored with its answer (completed), one deleted while pending -> not listed.
    await _submit(client, carla, model_version, response="done")
    deleted = await _submit(client, carla, model_version)
    await set_columns(session_factory, deleted, is_active=False)
    # dora: one running.
    await set_columns(session_factory, await _submit(client, dora, model_version), status="running")

    response = await client.get("/queue/users")
    assert response.status_code == 200, response.text
    assert response.headers["X-Total-Count"] == "3"
    assert response.json() == [
        {"user_id": bruno["id"], "email": "bruno@example.com", "pending": 3, "running": 0},
        {"user_id": ana["id"], "email": "ana@example.com", "pending": 2, "running": 1},
        {"user_id": dora["id"], "email": "dora@example.com", "pending": 0, "running": 1},
    ]

    page = await client.get("/queue/users", params={"limit": 1, "offset": 1})
    assert [row["user_id"] for row in page.json()] == [ana["id"]]
    assert page.headers["X-Total-Count"] == "3"
    past = await client.get("/queue/users", params={"offset": 10})
    assert past.json() == []
    assert past.headers["X-Total-Count"] == "3"
    assert_error(await client.get("/queue/users", params={"limit": 0}), 422, "validation_error")


async def test_nothing_unfinished_is_an_empty_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/queue/users")
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["X-Total-Count"] == "0"


async def test_only_the_admin_may_see_the_queue_by_user(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await create_user(client)
    key = await issue_key(client, user["id"])
    async with client_of(app, key) as as_user:
        assert_error(await as_user.get("/queue/users"), 403, "forbidden")
    async with client_of(app, None) as anonymous:
        response = await anonymous.get("/queue/users")
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_the_counts_come_from_the_unfinished_index_not_the_table(
    session_factory: SessionFactory,
) -> None:
    """The cost follows the unfinished rows, however many finished ones the table holds."""
    compiled = page_statement(Page()).compile(
        dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
    async with session_factory() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = await session.scalar(text(f"EXPLAIN (FORMAT JSON) {compiled}"))
    # Either partial index of the unfinished rows bounds the scan; not the whole table.
    assert "ix_conversation_user_id_unfinished" in str(plan) or "ix_conversation_unfinished" in str(
        plan
    )


async def test_the_page_size_is_bounded_at_100(client: httpx.AsyncClient) -> None:
    assert (await client.get("/queue/users", params={"limit": 100})).status_code == 200
    too_many = await client.get("/queue/users", params={"limit": 101})
    assert_error(too_many, 422, "validation_error")
