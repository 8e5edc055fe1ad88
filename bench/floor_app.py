"""Benchmark fixture, not part of the service: the floor the API is measured against.

The least an app can do for the API's two hot routes, on the same PostgreSQL and Redis:

- `POST /conversations`: parse the JSON body, one INSERT into the same `conversation` table
  (RETURNING the columns the API answers with), one Redis LPUSH of the new id; 202 + the row.
- `GET /conversations/{id}`: one SELECT by id; 200 + the row, or 404.

Starlette + asyncpg + redis-py's asyncio client, no validation, no auth, no logging, no
tracing. It runs under the same uvicorn flags as the API (`bench/stack.py`):

    FLOOR_DATABASE_URL=postgresql://... FLOOR_REDIS_URL=redis://... FLOOR_LIST_KEY=... \\
    python -m uvicorn --factory bench.floor_app:create_app --no-access-log
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# What the API's ConversationRead carries, in the same order.
COLUMNS = (
    "id, user_id, model_version_id, prompt, system_instruction, context, response, temperature,"
    " top_p, max_tokens, status, error_code, error_message, next_attempt_at, attempts,"
    " prompt_version, finish_reason, trace_id, callback_url, priority, input_tokens,"
    " output_tokens,"
    " total_tokens,"
    " latency_ms, queue_wait_ms, created_at, started_at, completed_at, updated_at, is_active"
)
INSERT = (
    "INSERT INTO conversation (user_id, model_version_id, prompt, max_tokens)"
    f" VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
)
SELECT = f"SELECT {COLUMNS} FROM conversation WHERE id = $1 AND is_active"


def _plain(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _json(status: int, row: asyncpg.Record | None) -> Response:
    body = json.dumps(dict(row) if row is not None else {"detail": "not found"}, default=_plain)
    return Response(body, status_code=status, media_type="application/json")


def _dsn() -> str:
    url = os.environ.get("FLOOR_DATABASE_URL") or os.environ["DATABASE_URL"]
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def create_app() -> Starlette:
    """The floor app (uvicorn: `--factory bench.floor_app:create_app`)."""
    redis_url = os.environ.get("FLOOR_REDIS_URL") or os.environ["REDIS_URL"]
    list_key = os.environ.get("FLOOR_LIST_KEY", "bench:floor")
    # The API's pool: DB_POOL_SIZE connections kept, DB_MAX_OVERFLOW more under load.
    size = int(os.environ.get("DB_POOL_SIZE", "20"))
    overflow = int(os.environ.get("DB_MAX_OVERFLOW", "0"))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["db"] = await asyncpg.create_pool(_dsn(), min_size=size, max_size=size + overflow)
        state["redis"] = redis.Redis.from_url(redis_url)
        try:
            yield
        finally:
            await state["redis"].aclose()
            await state["db"].close()

    async def create(request: Request) -> Response:
        data = await request.json()
        row = await state["db"].fetchrow(
            INSERT,
            uuid.UUID(data["user_id"]),
            uuid.UUID(data["model_version_id"]),
            data["prompt"],
            data.get("max_tokens"),
        )
        await state["redis"].lpush(list_key, str(row["id"]))
        return _json(202, row)

    async def read(request: Request) -> Response:
        try:
            conversation_id = uuid.UUID(request.path_params["conversation_id"])
        except ValueError:
            return _json(404, None)
        row = await state["db"].fetchrow(SELECT, conversation_id)
        return _json(200 if row is not None else 404, row)

    async def live(request: Request) -> Response:
        return Response('{"status":"ok"}', media_type="application/json")

    routes = [
        Route("/conversations", create, methods=["POST"]),
        Route("/conversations/{conversation_id}", read, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
