from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from api.deps import PageDep, QueueDep, SessionDep
from api.errors import error_responses
from api.submission import enqueue_after_commit
from shared.models import ConversationStatus
from shared.schemas.conversations import (
    ConversationCreate,
    ConversationOrder,
    ConversationRead,
    ConversationUpdate,
)
from shared.services import conversations as service
from shared.telemetry import current_trace_id

router = APIRouter(prefix="/conversations", tags=["conversations"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ConversationRead,
    responses={
        201: {"model": ConversationRead, "description": "Stored with the given response"},
        **error_responses(400, 404, 409, 422, 503),
    },
)
async def create_conversation(
    data: ConversationCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    queue: QueueDep,
) -> ConversationRead:
    """Submit a prompt.

    Without `response`: stored as `pending` and answered with 202 at once; a worker
    generates the answer. Poll the URL in the `Location` header until `status` is
    `completed` or `failed`. With `response`: stored as `completed` (201), nothing queued.
    """
    conversation = await service.create_conversation(
        session,
        data=data,
        supported_providers=request.app.state.supported_providers,
        trace_id=current_trace_id(),
    )
    response.headers["Location"] = str(
        request.url_for("get_conversation", conversation_id=conversation.id)
    )
    metrics = request.app.state.metrics
    if conversation.status == ConversationStatus.COMPLETED:
        response.status_code = status.HTTP_201_CREATED
        metrics.conversations_submitted_total.labels("stored").inc()
        return ConversationRead.model_validate(conversation)
    await enqueue_after_commit(session, queue, conversation)
    metrics.conversations_submitted_total.labels("queued").inc()
    return ConversationRead.model_validate(conversation)


@router.get("", response_model=list[ConversationRead], responses=error_responses(422, 503))
async def list_conversations(
    session: SessionDep,
    page: PageDep,
    response: Response,
    order_by: Annotated[ConversationOrder, Query()] = ConversationOrder.CREATED_AT_DESC,
    user_id: Annotated[uuid.UUID | None, Query()] = None,
    model_version_id: Annotated[uuid.UUID | None, Query()] = None,
    status: Annotated[ConversationStatus | None, Query()] = None,
) -> list[ConversationRead]:
    """List active conversations, filtered by user, model version or status."""
    rows, total = await service.list_conversations(
        session,
        page=page,
        order_by=order_by,
        user_id=user_id,
        model_version_id=model_version_id,
        status=status,
    )
    response.headers["X-Total-Count"] = str(total)
    return [ConversationRead.model_validate(row) for row in rows]


@router.get(
    "/{conversation_id}",
    response_model=ConversationRead,
    responses=error_responses(404, 422, 503),
)
async def get_conversation(conversation_id: uuid.UUID, session: SessionDep) -> ConversationRead:
    """Poll one conversation: status, response, error, attempts, tokens and timings."""
    conversation = await service.get_conversation(session, conversation_id=conversation_id)
    return ConversationRead.model_validate(conversation)


@router.patch(
    "/{conversation_id}",
    response_model=ConversationRead,
    responses=error_responses(400, 404, 409, 422, 503),
)
async def update_conversation(
    conversation_id: uuid.UUID, data: ConversationUpdate, session: SessionDep
) -> ConversationRead:
    """Edit the stored response of a completed conversation (409 while it is unfinished)."""
    conversation = await service.update_conversation(
        session, conversation_id=conversation_id, data=data
    )
    return ConversationRead.model_validate(conversation)


@router.post(
    "/{conversation_id}/cancel",
    response_model=ConversationRead,
    responses=error_responses(404, 409, 422, 503),
)
async def cancel_conversation(conversation_id: uuid.UUID, session: SessionDep) -> ConversationRead:
    """Cancel a pending or running conversation; a worker's late answer is discarded."""
    conversation = await service.cancel_conversation(session, conversation_id=conversation_id)
    return ConversationRead.model_validate(conversation)


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 422, 503),
)
async def delete_conversation(conversation_id: uuid.UUID, session: SessionDep) -> None:
    """Soft-delete a conversation (an unfinished one is cancelled first)."""
    await service.delete_conversation(session, conversation_id=conversation_id)
