from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import BadRequestError, ConflictError, NotFoundError
from shared.models import Conversation, ConversationStatus
from shared.repositories.conversations import CONVERSATION_ORDER, ConversationRepository
from shared.schemas.common import Page
from shared.schemas.conversations import ConversationCreate, ConversationOrder, ConversationUpdate
from shared.services.model_versions import get_model_version
from shared.services.users import get_user

CONVERSATION_NOT_FOUND = "Conversation not found"


async def create_conversation(
    session: AsyncSession,
    *,
    data: ConversationCreate,
    supported_providers: Collection[str],
    trace_id: str | None = None,
) -> Conversation:
    """Store a conversation: completed when the answer is given, else pending for a worker.

    The caller commits, then enqueues pending conversations (never before the commit, or a
    fast worker could look for a row that is not there yet).
    """
    await get_user(session, user_id=data.user_id)
    model_version = await get_model_version(session, model_version_id=data.model_version_id)
    values = data.model_dump()
    if data.response is None:
        if model_version.provider not in supported_providers:
            raise BadRequestError(
                f"Provider '{model_version.provider}' cannot generate answers here",
                details={
                    "provider": model_version.provider,
                    "supported_providers": sorted(supported_providers),
                },
            )
        status = ConversationStatus.PENDING
    else:
        status = ConversationStatus.COMPLETED
        values["completed_at"] = datetime.now(UTC)
    conversation = Conversation(**values, status=status.value, trace_id=trace_id)
    return await ConversationRepository(session).add(conversation)


async def get_conversation(session: AsyncSession, *, conversation_id: uuid.UUID) -> Conversation:
    conversation = await ConversationRepository(session).get(conversation_id)
    if conversation is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    return conversation


async def list_conversations(
    session: AsyncSession,
    *,
    page: Page,
    order_by: ConversationOrder,
    user_id: uuid.UUID | None = None,
    model_version_id: uuid.UUID | None = None,
    status: ConversationStatus | None = None,
) -> tuple[list[Conversation], int]:
    filters = []
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
    session: AsyncSession, *, conversation_id: uuid.UUID, data: ConversationUpdate
) -> Conversation:
    repo = ConversationRepository(session)
    conversation = await repo.get(conversation_id, for_update=True)
    if conversation is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    if conversation.status != ConversationStatus.COMPLETED:
        raise ConflictError(
            "Only a completed conversation's response can be edited",
            details={"status": conversation.status},
        )
    conversation.response = data.response
    return await repo.refresh(conversation)


async def cancel_conversation(session: AsyncSession, *, conversation_id: uuid.UUID) -> Conversation:
    repo = ConversationRepository(session)
    if not await repo.cancel(conversation_id):
        conversation = await get_conversation(session, conversation_id=conversation_id)
        raise ConflictError(
            "Conversation already finished", details={"status": conversation.status}
        )
    return await get_conversation(session, conversation_id=conversation_id)


async def delete_conversation(session: AsyncSession, *, conversation_id: uuid.UUID) -> None:
    """Soft delete; a pending or running conversation is cancelled so no worker answers it."""
    repo = ConversationRepository(session)
    conversation = await repo.get(conversation_id, for_update=True)
    if conversation is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    if not ConversationStatus(conversation.status).is_terminal:
        conversation.status = ConversationStatus.CANCELLED.value
        conversation.completed_at = datetime.now(UTC)
        conversation.lease_expires_at = None
    conversation.is_active = False
    await session.flush()
