from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.db import DriverConnection, driver_connection
from shared.errors import (
    AppError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    TooManyRequestsError,
    UnprocessableError,
)
from shared.lifecycle import Outcome
from shared.models import Conversation, ConversationStatus, Priority
from shared.repositories import conversation_statements as statements
from shared.repositories.api_keys import KeyOwner
from shared.repositories.conversation_statements import Row
from shared.repositories.conversations import CONVERSATION_ORDER, ConversationRepository
from shared.schemas.common import Page
from shared.schemas.conversations import ConversationCreate, ConversationOrder, ConversationUpdate
from shared.services.model_versions import MODEL_VERSION_NOT_FOUND
from shared.services.users import USER_NOT_FOUND

CONVERSATION_NOT_FOUND = "Conversation not found"
# A full user waits for one of its conversations to finish; a few seconds is a fair guess.
ACTIVE_CAP_RETRY_AFTER_SECONDS = 5


def _refusal(
    blocked: statements.NotInserted, *, cap: int | None, providers: Collection[str] | None
) -> AppError:
    """The answer for a submission its INSERT refused, in the order a client fixes them."""
    if not blocked.user_found:
        return NotFoundError(USER_NOT_FOUND)
    if blocked.provider is None:
        return NotFoundError(MODEL_VERSION_NOT_FOUND)
    if cap is not None and blocked.unfinished >= cap:
        return TooManyRequestsError(
            f"At most {cap} conversations may be pending or running at once; "
            "retry when one finishes",
            details={"max_active": cap},
            retry_after=ACTIVE_CAP_RETRY_AFTER_SECONDS,
        )
    if providers is not None and blocked.provider not in providers:
        return BadRequestError(
            f"Provider '{blocked.provider}' cannot generate answers here",
            details={"provider": blocked.provider, "supported_providers": sorted(providers)},
        )
    # The user or model version changed between the INSERT and this look (and back).
    return ConflictError("The user or model version changed during the submission; retry")


@dataclass(frozen=True, slots=True)
class Stored:
    """A submission's conversation; `replayed` when its idempotency key had made it before."""

    row: Row
    replayed: bool = False
    provider: str | None = None  # who generates it: the job goes to that provider's servers
    queue_weight: int = 1  # its user's share of the workers


def request_fingerprint(data: ConversationCreate) -> str:
    """What a retry must repeat to be the same request: the body as validated (the owner is
    the key's scope, not part of it)."""
    body = data.model_dump(mode="json", exclude={"user_id"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


async def create_conversation(
    engine: AsyncEngine,
    *,
    data: ConversationCreate,
    user_id: uuid.UUID,
    supported_providers: Collection[str],
    trace_id: str | None = None,
    max_active: int | None = None,
    idempotency_key: str | None = None,
) -> Stored:
    """Store a conversation for `user_id`, committed when this returns: completed when the
    answer is given, else pending (the caller then enqueues it; never before the commit, or a
    fast worker could look for a row that is not there yet).

    `max_active` caps the user's pending + running conversations (None: no cap). One
    statement checks the user and model version and inserts; with a cap, the user's row is
    locked first, so concurrent submissions of one user (on any replica) count one after
    another and the cap is exact.

    `idempotency_key`: a user's key already used within `IDEMPOTENCY_WINDOW` gives back the
    conversation it made (`replayed`), nothing new stored; with another body, 422. Concurrent
    submissions with one key store one conversation: the unique index makes the others wait
    for it, then find it.
    """
    generate = data.response is None
    values: dict[str, Any] = data.model_dump(exclude={"user_id", "model_version_id"})
    values["trace_id"] = trace_id
    values["priority"] = data.priority.value
    if generate:
        values["status"] = ConversationStatus.PENDING.value
    else:
        values["status"] = ConversationStatus.COMPLETED.value
        values["completed_at"] = datetime.now(UTC)
    if idempotency_key is not None:
        values["idempotency_key"] = idempotency_key
        values["request_hash"] = request_fingerprint(data)
    target = _Target(
        user_id=user_id,
        model_version_id=data.model_version_id,
        values=values,
        providers=supported_providers if generate else None,
        cap=max_active if generate and max_active else None,
    )
    async with driver_connection(engine) as db:
        if target.cap is None:
            stored = await _store(db, target)
        else:
            async with db.transaction():
                if not await statements.lock_user(db, user_id):
                    raise NotFoundError(USER_NOT_FOUND)
                stored = await _store(db, target)
    if isinstance(stored, statements.NotInserted):
        raise _refusal(stored, cap=target.cap, providers=target.providers)
    return stored


@dataclass(frozen=True, slots=True)
class _Target:
    user_id: uuid.UUID
    model_version_id: uuid.UUID
    values: dict[str, Any]
    providers: Collection[str] | None
    cap: int | None


async def _store(db: DriverConnection, target: _Target) -> Stored | statements.NotInserted:
    key: str | None = target.values.get("idempotency_key")
    # Twice at most: a key past its window is released, then the insert is tried again.
    for _ in range(2):
        row = await statements.insert(
            db,
            user_id=target.user_id,
            model_version_id=target.model_version_id,
            values=target.values,
            providers=target.providers,
            cap=target.cap,
        )
        if row is not None:
            provider, weight = row.pop("provider"), row.pop("queue_weight")
            return Stored(row, provider=provider, queue_weight=weight)
        keyed = await _keyed(db, target.user_id, key)
        if keyed is None:
            break
        if not keyed.key_holds:
            await statements.release_idempotency_key(db, target.user_id, str(key))
            continue
        if keyed.request_hash != target.values["request_hash"]:
            raise UnprocessableError(
                "This Idempotency-Key was used with a different request body",
                details={"header": "Idempotency-Key", "conversation_id": str(keyed.row["id"])},
            )
        return Stored(keyed.row, replayed=True)
    return await statements.why_not_inserted(db, target.user_id, target.model_version_id)


async def _keyed(
    db: DriverConnection, user_id: uuid.UUID, key: str | None
) -> statements.KeyedConversation | None:
    """What the key made, when the INSERT wrote nothing because of it."""
    return None if key is None else await statements.by_idempotency_key(db, user_id, key)


async def read_conversation(
    engine: AsyncEngine, *, conversation_id: uuid.UUID, owner_id: uuid.UUID | None
) -> Row:
    """A poll: the conversation if `owner_id` owns it (None: any owner), in one statement."""
    async with driver_connection(engine) as db:
        row = await statements.read_one(db, conversation_id, owner_id)
    if row is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    return row


async def read_conversation_by_key(
    engine: AsyncEngine, *, key_hash: str, conversation_id: uuid.UUID
) -> tuple[KeyOwner, Row | None] | None:
    """A poll with a user key: the key's owner and their conversation (None: not theirs, or
    none), in one statement; None when no live key of an active user has this hash."""
    async with driver_connection(engine) as db:
        return await statements.read_one_by_key(db, key_hash, conversation_id)


async def get_conversation(
    session: AsyncSession, *, conversation_id: uuid.UUID, owner_id: uuid.UUID | None
) -> Conversation:
    """The conversation if `owner_id` owns it (None: any owner); another's is "not found"."""
    conversation = await ConversationRepository(session).get_owned(conversation_id, owner_id)
    if conversation is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    return conversation


async def list_conversations(
    session: AsyncSession,
    *,
    page: Page,
    order_by: ConversationOrder,
    owner_id: uuid.UUID | None,
    user_id: uuid.UUID | None = None,
    model_version_id: uuid.UUID | None = None,
    status: ConversationStatus | None = None,
    priority: Priority | None = None,
) -> tuple[list[Conversation], int]:
    filters = []
    if owner_id is not None:
        filters.append(Conversation.user_id == owner_id)
    if user_id is not None:
        filters.append(Conversation.user_id == user_id)
    if model_version_id is not None:
        filters.append(Conversation.model_version_id == model_version_id)
    if status is not None:
        filters.append(Conversation.status == status.value)
    if priority is not None:
        filters.append(Conversation.priority == priority.value)
    return await ConversationRepository(session).list_page(
        filters=filters,
        order_by=[CONVERSATION_ORDER[order_by]],
        limit=page.limit,
        offset=page.offset,
    )


async def update_conversation(
    session: AsyncSession,
    *,
    conversation_id: uuid.UUID,
    owner_id: uuid.UUID | None,
    data: ConversationUpdate,
) -> Conversation:
    repo = ConversationRepository(session)
    conversation = await repo.get_owned(conversation_id, owner_id, for_update=True)
    if conversation is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    if conversation.status != ConversationStatus.COMPLETED:
        raise ConflictError(
            "Only a completed conversation's response can be edited",
            details={"status": conversation.status},
        )
    conversation.response = data.response
    return await repo.refresh(conversation)


async def cancel_conversation(
    session: AsyncSession, *, conversation_id: uuid.UUID, owner_id: uuid.UUID | None
) -> Conversation:
    """End a pending or running conversation; a worker's late answer then finds the row taken
    and is discarded (see `shared.lifecycle`)."""
    repo = ConversationRepository(session)
    if not await repo.settle(conversation_id, Outcome.cancelled(), owner_id=owner_id):
        conversation = await get_conversation(
            session, conversation_id=conversation_id, owner_id=owner_id
        )
        raise ConflictError(
            "Conversation already finished", details={"status": conversation.status}
        )
    return await get_conversation(session, conversation_id=conversation_id, owner_id=owner_id)


async def delete_conversation(
    session: AsyncSession, *, conversation_id: uuid.UUID, owner_id: uuid.UUID | None
) -> None:
    """Soft delete; a pending or running conversation is cancelled first, so no worker's
    answer lands on it and the sweeper never queues it again."""
    repo = ConversationRepository(session)
    await repo.settle(conversation_id, Outcome.cancelled(), owner_id=owner_id)
    if not await repo.soft_delete(conversation_id, owner_id=owner_id):
        raise NotFoundError(CONVERSATION_NOT_FOUND)
