# ruff: noqa: S608  (the statements name the mapped tables; values are bound parameters)
"""The worker's hot statements, written out and run on the driver: one round trip each.

Every generation claims its row and writes its outcome back. Here the claim is one `UPDATE
... FROM` that takes the row (pending, or running with an expired lease), hands out the next
attempt number and returns what the model call needs, the model version's columns included;
the write-back is one `UPDATE` fenced by that number. They are the same moves as
`ConversationRepository.claim` and `.settle` (the ORM forms, which the tests and the API's
cancel use): what each outcome writes is `shared.lifecycle.Outcome`'s, read field by field,
and a test holds the two forms to the same rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table

from shared.db import DriverConnection, statement_span
from shared.lifecycle import Outcome
from shared.models import Conversation, ConversationStatus, ModelVersion
from shared.repositories.base import column_list

_TABLE = cast(Table, Conversation.__table__)
_CONVERSATION = _TABLE.name
_MODEL_VERSION = ModelVersion.__tablename__
_PENDING = ConversationStatus.PENDING.value
_RUNNING = ConversationStatus.RUNNING.value
_COMPLETED = ConversationStatus.COMPLETED.value

# What a claim returns of the conversation, and of its model version.
_CLAIMED = (
    "id",
    "attempts",
    "queue_wait_ms",
    "prompt",
    "system_instruction",
    "context",
    "temperature",
    "top_p",
    "max_tokens",
    "model_version_id",
)
_MODEL = ("provider", "model_name", "max_tokens_cap", "default_temperature")
_RETURNED = ", ".join(
    [
        column_list(_TABLE, _CLAIMED, alias="c"),
        column_list(cast(Table, ModelVersion.__table__), _MODEL, alias="m"),
    ]
)
# $1 conversation, $2 lease (interval). The attempt number it returns fences every later write.
CLAIM = f"""
UPDATE "{_CONVERSATION}" AS c SET
  status = '{_RUNNING}',
  attempts = c.attempts + 1,
  started_at = coalesce(c.started_at, now()),
  lease_expires_at = now() + $2::interval,
  next_attempt_at = NULL,
  queue_wait_ms = coalesce(c.queue_wait_ms, extract(epoch FROM now() - c.created_at) * 1000),
  updated_at = now()
FROM "{_MODEL_VERSION}" AS m
WHERE c.id = $1 AND c.is_active AND m.id = c.model_version_id
  AND (c.status = '{_PENDING}' OR (c.status = '{_RUNNING}' AND c.lease_expires_at < now()))
RETURNING {_RETURNED}, c.callback_url IS NOT NULL AS has_callback
"""

# Why a claim took nothing: the row's status and, if another attempt holds it, when its lease
# runs out (no row: gone or soft-deleted).
CLAIM_REFUSED = f"""
SELECT status, lease_expires_at FROM "{_CONVERSATION}" WHERE id = $1 AND is_active
"""

# $1 conversation, $2 the attempt that claimed it: lands only while that attempt holds the row.
# $3 status, $4 terminal, $5 completed (its columns $6-$11, the error cleared), $12 error code
# and $13 message (when not NULL), $14 retry delay (interval; NULL: none), $15 hand back (the
# attempt given back). The same columns as `Outcome.columns()`.
SETTLE = f"""
UPDATE "{_CONVERSATION}" SET
  status = $3,
  updated_at = now(),
  lease_expires_at = NULL,
  completed_at = CASE WHEN $4 THEN now() ELSE completed_at END,
  response = CASE WHEN $5 THEN $6 ELSE response END,
  input_tokens = CASE WHEN $5 THEN $7 ELSE input_tokens END,
  output_tokens = CASE WHEN $5 THEN $8 ELSE output_tokens END,
  total_tokens = CASE WHEN $5 THEN $7 + $8 ELSE total_tokens END,
  latency_ms = CASE WHEN $5 THEN $9 ELSE latency_ms END,
  finish_reason = CASE WHEN $5 THEN $10 ELSE finish_reason END,
  prompt_version = CASE WHEN $5 THEN $11 ELSE prompt_version END,
  error_code = CASE WHEN $5 THEN NULL WHEN $12::text IS NOT NULL THEN $12 ELSE error_code END,
  error_message = CASE
    WHEN $5 THEN NULL WHEN $12::text IS NOT NULL THEN $13 ELSE error_message END,
  next_attempt_at = CASE
    WHEN $14::interval IS NOT NULL THEN now() + $14::interval ELSE next_attempt_at END,
  attempts = CASE WHEN $15 THEN attempts - 1 ELSE attempts END
WHERE id = $1 AND status = '{_RUNNING}' AND attempts = $2
RETURNING id
"""

# The row holds `attempt`'s outcome of `status` (a write whose reply was lost).
HAS_OUTCOME = f"""
SELECT 1 FROM "{_CONVERSATION}" WHERE id = $1 AND attempts = $2 AND status = $3
"""


@dataclass(frozen=True, slots=True)
class ClaimedModel:
    id: uuid.UUID
    provider: str
    model_name: str
    max_tokens_cap: int | None
    default_temperature: float | None


@dataclass(frozen=True, slots=True)
class ClaimedConversation:
    """The row as the claim left it: what the model call needs, and the attempt number."""

    id: uuid.UUID
    attempts: int
    queue_wait_ms: float | None
    prompt: str
    system_instruction: str | None
    context: str | None
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    model_version_id: uuid.UUID
    # A webhook is to be scheduled when it ends (`callback_url` is written once, at submit).
    has_callback: bool


@dataclass(frozen=True, slots=True)
class ClaimRefused:
    """The row could not be claimed: its status (None: gone) and lease."""

    status: str | None
    lease_expires_at: datetime | None


async def claim(
    db: DriverConnection, conversation_id: uuid.UUID, *, lease_seconds: float
) -> tuple[ClaimedConversation, ClaimedModel] | ClaimRefused:
    """Take the row for one attempt (pending, or running with an expired lease → running), or
    say what holds it. The returned `attempts` is the fencing token of every later write."""
    with statement_span("UPDATE", _CONVERSATION):
        row = await db.fetchrow(CLAIM, conversation_id, timedelta(seconds=lease_seconds))
    if row is None:
        with statement_span("SELECT", _CONVERSATION):
            current = await db.fetchrow(CLAIM_REFUSED, conversation_id)
        if current is None:
            return ClaimRefused(None, None)
        return ClaimRefused(current["status"], current["lease_expires_at"])
    conversation = ClaimedConversation(
        **{name: row[name] for name in _CLAIMED}, has_callback=row["has_callback"]
    )
    model = ClaimedModel(id=conversation.model_version_id, **{name: row[name] for name in _MODEL})
    return conversation, model


def _settle_args(outcome: Outcome) -> tuple[Any, ...]:
    completed = outcome.status.value == _COMPLETED
    retry = outcome.retry_in_seconds
    return (
        outcome.status.value,
        outcome.status.is_terminal,
        completed,
        outcome.response,
        outcome.input_tokens,
        outcome.output_tokens,
        outcome.latency_ms,
        outcome.finish_reason,
        outcome.prompt_version,
        outcome.error_code,
        outcome.error_message,
        None if retry is None else timedelta(seconds=retry),
        outcome.hand_back,
    )


async def settle(
    db: DriverConnection, conversation_id: uuid.UUID, outcome: Outcome, *, attempt: int
) -> bool:
    """Write `outcome` if `attempt` still holds the row (running, same attempt number); False
    when it does not, and then nothing changed."""
    with statement_span("UPDATE", _CONVERSATION):
        row = await db.fetchrow(SETTLE, conversation_id, attempt, *_settle_args(outcome))
    return row is not None


async def has_outcome(
    db: DriverConnection, conversation_id: uuid.UUID, *, attempt: int, status: ConversationStatus
) -> bool:
    with statement_span("SELECT", _CONVERSATION):
        return await db.fetchval(HAS_OUTCOME, conversation_id, attempt, status.value) is not None
