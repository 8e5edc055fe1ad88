from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import BadRequestError, ConflictError, NotFoundError, TooManyRequestsError
from shared.lifecycle import Outcome
from shared.models import Conversation, ConversationStatus
from shared.models.conversation import MODEL_VERSION_FOREIGN_KEY, USER_FOREIGN_KEY
from shared.repositories.conversations import CONVERSATION_ORDER, ConversationRepository
from shared.schemas.common import Page
from shared.schemas.conversations import ConversationCreate, ConversationOrder, ConversationUpdate
from shared.services.model_versions import MODEL_VERSION_NOT_FOUND, get_model_version
from shared.services.users import USER_NOT_FOUND, get_user

CONVERSATION_NOT_FOUND = "Conversation not found"
# A full user waits for one of its conversations to finish; a few seconds is a fair guess.
ACTIVE_CAP_RETRY_AFTER_SECONDS = 5


async def _check_active_cap(session: AsyncSession, *, user_id: uuid.UUID, cap: int) -> None:
    # The caller holds the user's row lock, so concurrent submits of one user (on any replica)
    # count one after another and the cap is exact.
    active = await ConversationRepository(session).count_unfinished(user_id, up_to=cap)
    if active >= cap:
        raise TooManyRequestsError(
            f"At most {cap} conversations may be pending or running at once; "
            "retry when one finishes",
            details={"max_active": cap},
            retry_after=ACTIVE_CAP_RETRY_AFTER_SECONDS,
        )


async def create_conversation(
    session: AsyncSession,
    *,
    data: ConversationCreate,
    user_id: uuid.UUID,
    supported_providers: Collection[str],
    trace_id: str | None = None,
    max_active: int | None = None,
) -> Conversation:
    """Store a conversation for `user_id`: completed when the answer is given, else pending.

    `max_active` caps the user's pending + running conversations (None: no cap). The caller
    commits, then enqueues pending conversations (never before the commit, or a fast worker
    could look for a row that is not there yet).
    """
    generate = data.response is None
    # Both rows stay locked until the commit, so neither can be soft-deleted in between; the
    # user's row is locked exclusively when its cap is counted, so its submits take turns.
    capped = bool(max_active and generate)
    await get_user(session, user_id=user_id, for_update=capped, for_share=not capped)
    model_version = await get_model_version(
        session, model_version_id=data.model_version_id, for_share=True
    )
    values = data.model_dump(exclude={"user_id"})
    values["user_id"] = user_id
    if generate:
        if max_active:
            await _check_active_cap(session, user_id=user_id, cap=max_active)
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
    # The user or model version may be removed after the checks above: answered as if gone.
    return await ConversationRepository(session).add(
        conversation,
        violations={
            USER_FOREIGN_KEY: NotFoundError(USER_NOT_FOUND),
            MODEL_VERSION_FOREIGN_KEY: NotFoundError(MODEL_VERSION_NOT_FOUND),
        },
    )


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
