from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.db import driver_connection
from shared.errors import (
    AppError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    TooManyRequestsError,
)
from shared.lifecycle import Outcome
from shared.models import Conversation, ConversationStatus
from shared.repositories import conversation_statements as statements
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


async def create_conversation(
    engine: AsyncEngine,
    *,
    data: ConversationCreate,
    user_id: uuid.UUID,
    supported_providers: Collection[str],
    trace_id: str | None = None,
    max_active: int | None = None,
) -> Row:
    """Store a conversation for `user_id`, committed when this returns: completed when the
    answer is given, else pending (the caller then enqueues it; never before the commit, or a
    fast worker could look for a row that is not there yet).

    `max_active` caps the user's pending + running conversations (None: no cap). One
    statement checks the user and model version and inserts; with a cap, the user's row is
    locked first, so concurrent submissions of one user (on any replica) count one after
    another and the cap is exact.
    """
    generate = data.response is None
    values: dict[str, Any] = data.model_dump(exclude={"user_id", "model_version_id"})
    values["trace_id"] = trace_id
    if generate:
        values["status"] = ConversationStatus.PENDING.value
    else:
        values["status"] = ConversationStatus.COMPLETED.value
        values["completed_at"] = datetime.now(UTC)
    providers = supported_providers if generate else None
    cap = max_active if generate and max_active else None
    ids = {"user_id": user_id, "model_version_id": data.model_version_id}
    async with driver_connection(engine) as db:
        if cap is None:
            row = await statements.insert(db, **ids, values=values, providers=providers, cap=None)
            blocked = None if row else await statements.why_not_inserted(db, *ids.values())
        else:
            async with db.transaction():
                if not await statements.lock_user(db, user_id):
                    raise NotFoundError(USER_NOT_FOUND)
                row = await statements.insert(
                    db, **ids, values=values, providers=providers, cap=cap
                )
                blocked = None if row else await statements.why_not_inserted(db, *ids.values())
    if row is None:
        assert blocked is not None
        raise _refusal(blocked, cap=cap, providers=providers)
    return row


async def read_conversation(
    engine: AsyncEngine, *, conversation_id: uuid.UUID, owner_id: uuid.UUID | None
) -> Row:
    """A poll: the conversation if `owner_id` owns it (None: any owner), in one statement."""
    async with driver_connection(engine) as db:
        row = await statements.read_one(db, conversation_id, owner_id)
    if row is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    return row


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
