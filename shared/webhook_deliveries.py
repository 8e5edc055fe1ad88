"""Webhook deliveries in PostgreSQL and their jobs in Redis (docs/webhooks.md).

Like a generation, a delivery's truth is its row (`webhook_delivery`, one per conversation)
and its arq job (`webhook:<conversation id>`) only a trigger: the row is written when the
conversation reaches a terminal status, then the job is sent; the sweeper makes the rows a
crash left unwritten and re-sends the jobs Redis lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.models import TERMINAL_STATUSES
from shared.queue import enqueue_job
from shared.schemas.conversations import ConversationRead
from shared.webhooks import webhook_id

DELIVER_WEBHOOK = "deliver_webhook"
# The terminal statuses, as the SQL below spells them.
assert {s.value for s in TERMINAL_STATUSES} == {"completed", "failed", "cancelled"}


def delivery_job_id(conversation_id: uuid.UUID) -> str:
    """Deterministic: a delivery has at most one job, however often it is sent."""
    return f"webhook:{conversation_id}"


# --- the rows ---------------------------------------------------------------------------------

# The delivery of a finished conversation with a callback; nothing if it has one already.
_OPEN = """
INSERT INTO webhook_delivery (conversation_id, url, webhook_id)
SELECT id, callback_url, :webhook_id FROM conversation
WHERE id = :id AND callback_url IS NOT NULL AND status IN ('completed', 'failed', 'cancelled')
ON CONFLICT (conversation_id) DO NOTHING
RETURNING conversation_id
"""

# Finished conversations with a callback but no delivery (their writer died before making it).
_MISSING = """
SELECT c.id FROM conversation AS c
WHERE c.callback_url IS NOT NULL AND c.status IN ('completed', 'failed', 'cancelled')
  AND c.completed_at > now() - interval '1 day'
  AND c.completed_at < now() - CAST(:grace AS interval)
  AND NOT EXISTS (SELECT 1 FROM webhook_delivery AS d WHERE d.conversation_id = c.id)
ORDER BY c.completed_at LIMIT :limit
"""

# Deliveries due for longer than the grace and not under way: their job may be lost.
_DUE = """
SELECT conversation_id FROM webhook_delivery
WHERE state = 'pending' AND next_attempt_at < now() - CAST(:grace AS interval)
  AND (locked_until IS NULL OR locked_until < now())
ORDER BY next_attempt_at LIMIT :limit
"""

# An attempt starts: due, not under way elsewhere; the new attempt number fences its result.
_CLAIM = """
UPDATE webhook_delivery
SET attempts = attempts + 1, locked_until = now() + CAST(:lock AS interval),
    updated_at = now()
WHERE conversation_id = :id AND state = 'pending' AND next_attempt_at <= now()
  AND (locked_until IS NULL OR locked_until < now())
RETURNING url, webhook_id, attempts
"""

_STATE = """
SELECT state, GREATEST(next_attempt_at, locked_until) - now() AS wait
FROM webhook_delivery WHERE conversation_id = :id
"""

# An attempt's result, written only by the attempt that claimed it.
_RECORD = """
UPDATE webhook_delivery
SET state = CAST(:state AS varchar), last_status_code = CAST(:status_code AS integer),
    last_error = CAST(:error AS text), last_attempt_at = now(), locked_until = NULL,
    updated_at = now(),
    delivered_at = CASE WHEN CAST(:state AS varchar) = 'delivered' THEN now() END,
    next_attempt_at = CASE
      WHEN CAST(:state AS varchar) = 'pending' THEN now() + CAST(:delay AS interval)
    END,
    history = history || jsonb_build_array(jsonb_build_object(
      'attempt', attempts, 'at', now(), 'status_code', CAST(:status_code AS integer),
      'error', CAST(:error AS text), 'duration_ms', CAST(:duration_ms AS double precision)))
WHERE conversation_id = :id AND attempts = :attempt AND state = 'pending'
"""

# The log as the API shows it: only to whoever may read the conversation.
_READ = """
SELECT c.id AS conversation_id, c.callback_url, c.status AS conversation_status,
       d.url, d.webhook_id, d.state, d.attempts, d.last_status_code, d.last_error,
       d.last_attempt_at, d.next_attempt_at, d.delivered_at, d.history, d.created_at
FROM conversation AS c LEFT JOIN webhook_delivery AS d ON d.conversation_id = c.id
WHERE c.id = :id AND c.is_active AND (CAST(:owner AS uuid) IS NULL OR c.user_id = :owner)
"""


# A conversation as the API reads it: the response model's fields, whatever its state.
_CONVERSATION = "SELECT {} FROM conversation WHERE id = :id".format(  # noqa: S608  # our names
    ", ".join(f'"{name}"' for name in ConversationRead.model_fields)
)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    conversation_id: uuid.UUID
    url: str
    webhook_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt ended: `state` pending (retry after `delay_seconds`), delivered or
    failed."""

    state: str
    status_code: int | None
    error: str | None
    duration_ms: float | None
    delay_seconds: float = 0.0


def _interval(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


async def _run(engine: AsyncEngine, statement: str, **params: Any) -> list[Any]:
    async with engine.begin() as connection:
        return list((await connection.execute(text(statement), params)).all())


async def open_delivery(engine: AsyncEngine, conversation_id: uuid.UUID) -> bool:
    """Make the delivery of a finished conversation that has a callback; False when it has
    none, is not finished, or has its delivery already."""
    rows = await _run(engine, _OPEN, id=conversation_id, webhook_id=webhook_id(conversation_id))
    return bool(rows)


async def claim(
    engine: AsyncEngine, conversation_id: uuid.UUID, *, lock_seconds: float
) -> ClaimedDelivery | None:
    rows = await _run(engine, _CLAIM, id=conversation_id, lock=_interval(lock_seconds))
    if not rows:
        return None
    url, message_id, attempt = rows[0]
    return ClaimedDelivery(conversation_id, url, message_id, attempt)


async def waiting(engine: AsyncEngine, conversation_id: uuid.UUID) -> float | None:
    """Seconds until a pending delivery that could not be claimed may be tried; None when
    there is nothing to deliver (no row, delivered or failed)."""
    rows = await _run(engine, _STATE, id=conversation_id)
    if not rows or rows[0][0] != "pending":
        return None
    wait = rows[0][1]
    return max(wait.total_seconds(), 0.0) if wait is not None else 0.0


async def record(engine: AsyncEngine, claimed: ClaimedDelivery, result: AttemptResult) -> bool:
    """Write an attempt's result; False when the attempt no longer owns the row."""
    async with engine.begin() as connection:
        done = await connection.execute(
            text(_RECORD),
            {
                "id": claimed.conversation_id,
                "attempt": claimed.attempt,
                "state": result.state,
                "status_code": result.status_code,
                "error": result.error,
                "duration_ms": result.duration_ms,
                "delay": _interval(result.delay_seconds),
            },
        )
    return bool(done.rowcount)


async def conversation_json(connection: AsyncConnection, conversation_id: uuid.UUID) -> str | None:
    """The conversation exactly as `GET /conversations/{id}` answers it (a deleted one too:
    `is_active` false), or None if there is no such row."""
    row = (await connection.execute(text(_CONVERSATION), {"id": conversation_id})).first()
    if row is None:
        return None
    return ConversationRead.model_validate(dict(row._mapping)).model_dump_json()


async def read_log(
    engine: AsyncEngine, conversation_id: uuid.UUID, owner_id: uuid.UUID | None
) -> dict[str, Any] | None:
    """The conversation's delivery as the API shows it; None when the caller may not read
    the conversation (or it does not exist)."""
    rows = await _run(engine, _READ, id=conversation_id, owner=owner_id)
    return None if not rows else dict(rows[0]._mapping)


async def missing_ids(
    engine: AsyncEngine, *, older_than_seconds: float, limit: int
) -> list[uuid.UUID]:
    rows = await _run(engine, _MISSING, grace=_interval(older_than_seconds), limit=limit)
    return [row[0] for row in rows]


async def due_ids(engine: AsyncEngine, *, older_than_seconds: float, limit: int) -> list[uuid.UUID]:
    rows = await _run(engine, _DUE, grace=_interval(older_than_seconds), limit=limit)
    return [row[0] for row in rows]


# --- the jobs ---------------------------------------------------------------------------------


async def enqueue_delivery(
    redis: Redis,
    queue_name: str,
    conversation_id: uuid.UUID,
    *,
    defer_seconds: float | None = None,
) -> bool:
    """Send the delivery's job (arq's format, the same script as a generation's); False when
    its job is queued already."""
    return await enqueue_job(
        redis,
        queue_name,
        function=DELIVER_WEBHOOK,
        args=[str(conversation_id)],
        job_id=delivery_job_id(conversation_id),
        defer_seconds=defer_seconds,
    )


async def schedule_delivery(
    engine: AsyncEngine, redis: Redis, queue_name: str, conversation_id: uuid.UUID
) -> None:
    """After a terminal status is committed: make the delivery (if the conversation has a
    callback) and send its job. Never raises: what fails here the sweeper does later, and the
    caller's path (a generation's write-back, a cancel) is not held up by it."""
    log = logger.bind(conversation_id=str(conversation_id))
    try:
        if not await open_delivery(engine, conversation_id):
            return
    except (OSError, SQLAlchemyError) as exc:
        log.warning("webhook_not_scheduled", error=type(exc).__name__)
        return
    try:
        await enqueue_delivery(redis, queue_name, conversation_id)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("webhook_not_enqueued", error=type(exc).__name__)
        return
    log.info("webhook_scheduled")
