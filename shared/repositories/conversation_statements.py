"""The request path's hot statements, written out and run on the driver: one round trip each.

Submitting and polling are most of the API's traffic. Here a submission is one `INSERT ...
SELECT` that checks the user and the model version (active, and locked against a concurrent
soft delete until it commits) and writes the row; a poll is one `SELECT` by primary key, with
a user's key looked up in the same statement. The
rest of the API goes through the ORM (`ConversationRepository`), where its comfort costs
little. The columns are the mapped table's, so a renamed column fails here at import.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table

from shared.db import DriverConnection, statement_span
from shared.models import Conversation, ConversationStatus, ModelVersion, User
from shared.repositories.api_keys import OWNER_OF, KeyOwner, key_owner
from shared.repositories.base import column_list
from shared.schemas.conversations import ConversationRead

Row = dict[str, Any]

_TABLE = cast(Table, Conversation.__table__)
_CONVERSATION = _TABLE.name
_USER = User.__tablename__
_MODEL_VERSION = ModelVersion.__tablename__
_UNFINISHED = f"('{ConversationStatus.PENDING.value}', '{ConversationStatus.RUNNING.value}')"


def _columns(names: Collection[str]) -> str:
    return column_list(_TABLE, names)


# What a conversation reads as: exactly the response model's fields.
_READ = _columns(list(ConversationRead.model_fields))
# What a submission writes; the rest are server defaults (id, timestamps, attempts, ...).
WRITTEN = (
    "user_id",
    "model_version_id",
    "prompt",
    "system_instruction",
    "context",
    "temperature",
    "top_p",
    "max_tokens",
    "response",
    "status",
    "trace_id",
    "completed_at",
    "idempotency_key",
    "request_hash",
    "callback_url",
    "priority",
)
_NEW_VALUES = ", ".join(f"${n}" for n in range(5, 5 + len(WRITTEN) - 2))

# $1 user, $2 model version, $3 providers a generation may use (NULL: any), $4 the user's cap
# of unfinished conversations (NULL: none); then the written values after the two ids.
# Counting under the cap is exact only after `LOCK_USER` in the same transaction: a single
# statement counts in the snapshot it started with, before any lock wait.
INSERT = f"""
INSERT INTO "{_CONVERSATION}" ({_columns(WRITTEN)})
SELECT u.id, m.id, {_NEW_VALUES}
FROM "{_USER}" AS u, "{_MODEL_VERSION}" AS m
WHERE u.id = $1 AND u.is_active AND m.id = $2 AND m.is_active
  AND ($3::text[] IS NULL OR m.provider = ANY($3::text[]))
  AND ($4::int IS NULL OR (
    SELECT count(*) FROM (
      SELECT 1 FROM "{_CONVERSATION}"
      WHERE user_id = $1 AND is_active AND status IN {_UNFINISHED} LIMIT $4
    ) AS unfinished
  ) < $4)
FOR SHARE OF u, m
ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {_READ},
  (SELECT provider FROM "{_MODEL_VERSION}" WHERE id = $2) AS provider,
  (SELECT queue_weight FROM "{_USER}" WHERE id = $1) AS queue_weight
"""

# Taken before counting a user's unfinished conversations: its submissions take turns.
LOCK_USER = f'SELECT 1 FROM "{_USER}" WHERE id = $1 AND is_active FOR UPDATE'

# Why an INSERT wrote nothing: which reference is missing, which provider, how many unfinished.
WHY_NOT_INSERTED = f"""
SELECT
  EXISTS (SELECT 1 FROM "{_USER}" WHERE id = $1 AND is_active) AS user_found,
  (SELECT provider FROM "{_MODEL_VERSION}" WHERE id = $2 AND is_active) AS provider,
  (SELECT count(*) FROM "{_CONVERSATION}"
   WHERE user_id = $1 AND is_active AND status IN {_UNFINISHED}) AS unfinished
"""

# How long an idempotency key holds: a retry within it finds the conversation the key made.
IDEMPOTENCY_WINDOW = "24 hours"

# The conversation a user's idempotency key made, and whether the key still holds.
BY_IDEMPOTENCY_KEY = f"""
SELECT {_READ}, request_hash,
  is_active AND created_at > now() - interval '{IDEMPOTENCY_WINDOW}' AS key_holds
FROM "{_CONVERSATION}" WHERE user_id = $1 AND idempotency_key = $2
"""

# A key past its window (or of a deleted conversation) is free for a new submission.
RELEASE_IDEMPOTENCY_KEY = f"""
UPDATE "{_CONVERSATION}" SET idempotency_key = NULL
WHERE user_id = $1 AND idempotency_key = $2
  AND NOT (is_active AND created_at > now() - interval '{IDEMPOTENCY_WINDOW}')
"""

# $2 NULL: any owner (the admin).
READ_ONE = f"""
SELECT {_READ} FROM "{_CONVERSATION}"
WHERE id = $1 AND is_active AND ($2::uuid IS NULL OR user_id = $2)
"""

# A poll with a user key in one round trip: the key's owner as `api_keys.OWNER_OF` finds it (its
# columns prefixed `key_`), and the conversation if that owner has it. No row: no live key of
# an active user has this hash; a row whose `id` is NULL: the owner has no such conversation.
READ_ONE_BY_KEY = f"""
SELECT k.id AS key_id, k.user_id AS key_user_id, k.key_hash AS key_key_hash,
  k.max_priority AS key_max_priority, c.*
FROM ({OWNER_OF}) AS k
LEFT JOIN LATERAL (
  SELECT {_READ} FROM "{_CONVERSATION}" WHERE id = $2 AND is_active AND user_id = k.user_id
) AS c ON true
"""
_KEY_PREFIX = "key_"
_KEY_COLUMNS = tuple(_KEY_PREFIX + name for name in ("id", "user_id", "key_hash", "max_priority"))


@dataclass(frozen=True, slots=True)
class NotInserted:
    """What stood in the way of an INSERT that wrote no row."""

    user_found: bool
    provider: str | None  # None: no such active model version
    unfinished: int


async def insert(
    db: DriverConnection,
    *,
    user_id: uuid.UUID,
    model_version_id: uuid.UUID,
    values: Mapping[str, Any],
    providers: Collection[str] | None,
    cap: int | None,
) -> Row | None:
    """Insert a conversation with `values` (the written columns but the two ids; a missing one
    is NULL) if its user and model version are active, its model's provider is among
    `providers` and its user is under `cap`; the row as read, its model's `provider` and its
    user's `queue_weight`, or None."""
    with statement_span("INSERT", _CONVERSATION):
        row = await db.fetchrow(
            INSERT,
            user_id,
            model_version_id,
            None if providers is None else list(providers),
            cap,
            *(values.get(name) for name in WRITTEN[2:]),
        )
    return _row(row)


async def lock_user(db: DriverConnection, user_id: uuid.UUID) -> bool:
    """Lock the active user's row until the transaction ends; False if there is none."""
    with statement_span("SELECT", _USER):
        return await db.fetchval(LOCK_USER, user_id) is not None


async def why_not_inserted(
    db: DriverConnection, user_id: uuid.UUID, model_version_id: uuid.UUID
) -> NotInserted:
    row = await db.fetchrow(WHY_NOT_INSERTED, user_id, model_version_id)
    assert row is not None  # a SELECT without FROM always returns its one row
    return NotInserted(
        user_found=bool(row["user_found"]),
        provider=row["provider"],
        unfinished=int(row["unfinished"]),
    )


@dataclass(frozen=True, slots=True)
class KeyedConversation:
    """The conversation an idempotency key made, and what the key says of a retry."""

    row: Row
    request_hash: str | None
    key_holds: bool


async def by_idempotency_key(
    db: DriverConnection, user_id: uuid.UUID, key: str
) -> KeyedConversation | None:
    with statement_span("SELECT", _CONVERSATION):
        found = await db.fetchrow(BY_IDEMPOTENCY_KEY, user_id, key)
    if found is None:
        return None
    row = dict(found)
    return KeyedConversation(
        row={name: row[name] for name in ConversationRead.model_fields},
        request_hash=row["request_hash"],
        key_holds=bool(row["key_holds"]),
    )


async def release_idempotency_key(db: DriverConnection, user_id: uuid.UUID, key: str) -> None:
    with statement_span("UPDATE", _CONVERSATION):
        await db.fetchval(RELEASE_IDEMPOTENCY_KEY, user_id, key)


async def read_one(
    db: DriverConnection, conversation_id: uuid.UUID, owner_id: uuid.UUID | None
) -> Row | None:
    """The active conversation, if `owner_id` owns it (None: any owner)."""
    with statement_span("SELECT", _CONVERSATION):
        return _row(await db.fetchrow(READ_ONE, conversation_id, owner_id))


async def read_one_by_key(
    db: DriverConnection, key_hash: str, conversation_id: uuid.UUID
) -> tuple[KeyOwner, Row | None] | None:
    """The owner of the live key with this hash and their active conversation, if they have
    it; None when no live key of an active user has this hash."""
    with statement_span("SELECT", _CONVERSATION):
        record = await db.fetchrow(READ_ONE_BY_KEY, key_hash, conversation_id)
    if record is None:
        return None
    row = dict(record)
    owner = key_owner(row, _KEY_PREFIX)
    for name in _KEY_COLUMNS:
        del row[name]
    return owner, (row if row["id"] is not None else None)


def _row(record: Mapping[str, Any] | None) -> Row | None:
    return None if record is None else dict(record)
