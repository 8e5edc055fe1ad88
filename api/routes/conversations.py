from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from api.auth import Principal, PrincipalDep
from api.deps import (
    EngineDep,
    LimiterDep,
    MetricsDep,
    PageDep,
    ProvidersDep,
    QueueDep,
    SessionDep,
    SettingsDep,
)
from api.errors import error_responses
from api.limits import check_submission_sizes
from api.submission import publish
from shared.errors import ForbiddenError
from shared.models import ConversationStatus
from shared.schemas.conversations import (
    ConversationCreate,
    ConversationOrder,
    ConversationRead,
    ConversationUpdate,
)
from shared.services import conversations as service
from shared.settings import Settings
from shared.telemetry import current_trace_id

router = APIRouter(prefix="/conversations", tags=["conversations"], responses=error_responses(401))


def _owner_for(caller: Principal, data: ConversationCreate) -> uuid.UUID:
    """Whose conversation this is: a user key acts for itself, the admin for whom it names."""
    if caller.user_id is not None:
        if data.user_id is not None and data.user_id != caller.user_id:
            raise ForbiddenError("A user key may only submit for its own user")
        return caller.user_id
    if data.user_id is None:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "user_id"),
                    "msg": "Field required when submitting with the admin key",
                    "type": "missing",
                }
            ]
        )
    return data.user_id


def _location(settings: Settings, conversation_id: uuid.UUID) -> str:
    # Never from the Host header: a forged host would turn the link into someone else's.
    path = f"/conversations/{conversation_id}"
    if settings.PUBLIC_BASE_URL is None:
        return path
    return str(settings.PUBLIC_BASE_URL).rstrip("/") + path


def _json(
    body: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The hot routes' answer, serialised once by pydantic (the route's `response_model`
    still documents it)."""
    return Response(body.model_dump_json(), status_code, headers, media_type="application/json")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ConversationRead,
    responses={
        201: {"model": ConversationRead, "description": "Stored with the given response"},
        **error_responses(400, 403, 404, 409, 413, 422, 429, 503),
    },
)
async def create_conversation(
    data: ConversationCreate,
    engine: EngineDep,
    queue: QueueDep,
    caller: PrincipalDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    providers: ProvidersDep,
) -> Response:
    """Submit a prompt.

    Without `response`: stored as `pending` and answered with 202 at once; a worker
    generates the answer. Poll the URL in the `Location` header until `status` is
    `completed` or `failed`. With `response`: stored as `completed` (201), nothing queued.

    A user key is limited to `SUBMIT_RATE_LIMIT` submissions and
    `MAX_ACTIVE_CONVERSATIONS_PER_USER` unfinished conversations (429 with `Retry-After`);
    a full queue answers 503 with `Retry-After`.
    """
    check_submission_sizes(data, settings)
    owner = _owner_for(caller, data)
    generate = data.response is None
    if generate and not caller.is_admin:
        await limiter.check_rate(owner)
    if generate:
        await limiter.check_queue_depth()
    row = await service.create_conversation(
        engine,
        data=data,
        user_id=owner,
        supported_providers=providers,
        trace_id=current_trace_id(),
        max_active=None if caller.is_admin else settings.MAX_ACTIVE_CONVERSATIONS_PER_USER,
    )
    conversation = ConversationRead.model_validate(row)
    # Committed: a worker that picks the job up now finds the row.
    if generate:
        await publish(queue, conversation.id)
    metrics.conversations_submitted_total.labels("queued" if generate else "stored").inc()
    return _json(
        conversation,
        status.HTTP_202_ACCEPTED if generate else status.HTTP_201_CREATED,
        headers={"Location": _location(settings, conversation.id)},
    )


@router.get("", response_model=list[ConversationRead], responses=error_responses(422, 503))
async def list_conversations(
    session: SessionDep,
    page: PageDep,
    response: Response,
    caller: PrincipalDep,
    order_by: Annotated[ConversationOrder, Query()] = ConversationOrder.CREATED_AT_DESC,
    user_id: Annotated[uuid.UUID | None, Query()] = None,
    model_version_id: Annotated[uuid.UUID | None, Query()] = None,
    status: Annotated[ConversationStatus | None, Query()] = None,
) -> list[ConversationRead]:
    """List active conversations, filtered by user, model version or status.

    A user key sees its own conversations only (and `X-Total-Count` counts only those).
    """
    rows, total = await service.list_conversations(
        session,
        page=page,
        order_by=order_by,
        owner_id=caller.owner_scope(),
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
async def get_conversation(
    conversation_id: uuid.UUID, engine: EngineDep, caller: PrincipalDep
) -> Response:
    """Poll one conversation: status, response, error, attempts, tokens and timings."""
    row = await service.read_conversation(
        engine, conversation_id=conversation_id, owner_id=caller.owner_scope()
    )
    return _json(ConversationRead.model_validate(row))


@router.patch(
    "/{conversation_id}",
    response_model=ConversationRead,
    responses=error_responses(400, 404, 409, 422, 503),
)
async def update_conversation(
    conversation_id: uuid.UUID, data: ConversationUpdate, session: SessionDep, caller: PrincipalDep
) -> ConversationRead:
    """Edit the stored response of a completed conversation (409 while it is unfinished)."""
    conversation = await service.update_conversation(
        session, conversation_id=conversation_id, owner_id=caller.owner_scope(), data=data
    )
    return ConversationRead.model_validate(conversation)


@router.post(
    "/{conversation_id}/cancel",
    response_model=ConversationRead,
    responses=error_responses(404, 409, 422, 503),
)
async def cancel_conversation(
    conversation_id: uuid.UUID, session: SessionDep, caller: PrincipalDep
) -> ConversationRead:
    """Cancel a pending or running conversation; a worker's late answer is discarded."""
    conversation = await service.cancel_conversation(
        session, conversation_id=conversation_id, owner_id=caller.owner_scope()
    )
    return ConversationRead.model_validate(conversation)


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 422, 503),
)
async def delete_conversation(
    conversation_id: uuid.UUID, session: SessionDep, caller: PrincipalDep
) -> None:
    """Soft-delete a conversation (an unfinished one is cancelled first)."""
    await service.delete_conversation(
        session, conversation_id=conversation_id, owner_id=caller.owner_scope()
    )
