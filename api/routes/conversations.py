from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from api import cancellation, long_poll, webhooks
from api.auth import INVALID_KEY, Principal, PrincipalDep, principal_of
from api.deps import EngineDep, PageDep, QueueDep, SessionDep, SubmissionsDep
from api.errors import error_responses
from shared.errors import ForbiddenError, NotFoundError, UnauthorizedError
from shared.models import ConversationStatus, Priority
from shared.schemas.conversations import (
    ConversationCreate,
    ConversationOrder,
    ConversationRead,
    ConversationUpdate,
)
from shared.services import conversations as service
from shared.services.conversations import CONVERSATION_NOT_FOUND

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
    caller: PrincipalDep,
    submissions: SubmissionsDep,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Makes retrying this request safe: the same key (per user) with the "
            "same body within 24 h answers the conversation it made, marked "
            "`Idempotent-Replayed: true`, and queues nothing; with another body, 422.",
        ),
    ] = None,
    prefer: Annotated[
        str | None,
        Header(
            max_length=200,
            description="`wait=N` (RFC 7240; at most 60): answer with the finished "
            "conversation (201) if it ends within N seconds, else the usual 202.",
        ),
    ] = None,
) -> Response:
    """Submit a prompt.

    Without `response`: stored as `pending` and answered with 202 at once; a worker
    generates the answer. Poll the URL in the `Location` header until `status` is
    `completed` or `failed`. With `response`: stored as `completed` (201), nothing queued.
    With `Prefer: wait=N`: the finished conversation (201) if it ends within N seconds.

    A user key is limited to `SUBMIT_RATE_LIMIT` submissions and
    `MAX_ACTIVE_CONVERSATIONS_PER_USER` unfinished conversations (429 with `Retry-After`);
    a full queue answers 503 with `Retry-After`.
    """
    owner = _owner_for(caller, data)
    webhooks.check_callback(data, submissions.settings)
    done = await submissions.submit(
        data,
        owner=owner,
        limited=not caller.is_admin,
        idempotency_key=idempotency_key,
        ceiling=caller.max_priority,
    )
    conversation = done.conversation
    headers = {"Location": submissions.location(conversation.id)}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    wait = long_poll.preferred_wait(prefer) if done.queued else 0
    if wait:
        # Watched before the row is read again: an ending in between is not missed.
        row = await long_poll.read_when_finished(
            submissions.engine,
            long_poll.get_finished_listener(request),
            conversation_id=conversation.id,
            owner_id=caller.owner_scope(),
            wait_seconds=wait,
        )
        conversation = ConversationRead.model_validate(row)
        headers["Preference-Applied"] = f"wait={wait}"
    finished = conversation.status.is_terminal
    return _json(
        conversation,
        status.HTTP_202_ACCEPTED if done.queued and not finished else status.HTTP_201_CREATED,
        headers=headers,
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
    priority: Annotated[Priority | None, Query()] = None,
) -> list[ConversationRead]:
    """List active conversations, filtered by user, model version, status or priority.

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
        priority=priority,
    )
    response.headers["X-Total-Count"] = str(total)
    return [ConversationRead.model_validate(row) for row in rows]


@router.get(
    "/{conversation_id}",
    response_model=ConversationRead,
    responses=error_responses(404, 422, 503),
)
async def get_conversation(
    conversation_id: uuid.UUID,
    engine: EngineDep,
    caller: PrincipalDep,
    request: Request,
    wait: Annotated[int, Query(ge=0, le=60, description=long_poll.WAIT_DOC)] = 0,
) -> Response:
    """Poll one conversation: status, response, error, attempts, tokens and timings.

    With `wait=N` (1-60) the answer comes as soon as the conversation has ended, or after N
    seconds with its state then (a long-poll)."""
    if wait:
        row = await long_poll.read_when_finished(
            engine,
            long_poll.get_finished_listener(request),
            conversation_id=conversation_id,
            owner_id=caller.owner_scope(),
            wait_seconds=wait,
        )
        return _json(ConversationRead.model_validate(row))
    row = await service.read_conversation(
        engine, conversation_id=conversation_id, owner_id=caller.owner_scope()
    )
    return _json(ConversationRead.model_validate(row))


async def poll_with_user_key(
    conversation_id: uuid.UUID, engine: AsyncEngine, key_hash: str, request: Request
) -> Response:
    """`get_conversation` for a user's key (`wait=0`): the key's lookup and the read in one
    statement, with the answers authentication and the read would give."""
    found = await service.read_conversation_by_key(
        engine, key_hash=key_hash, conversation_id=conversation_id
    )
    owner, row = found if found is not None else (None, None)
    caller = principal_of(owner, key_hash)
    if caller is None:
        raise UnauthorizedError(INVALID_KEY)
    request.state.principal = caller
    if row is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
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
    conversation_id: uuid.UUID,
    session: SessionDep,
    queue: QueueDep,
    caller: PrincipalDep,
    engine: EngineDep,
) -> ConversationRead:
    """Cancel a pending or running conversation (409 once it has ended).

    A pending one never reaches the model. A running one's model call is stopped within about
    a second by the worker running it, and the text generated until then is kept as its
    `response`; any later answer is discarded."""
    conversation = await service.cancel_conversation(
        session, conversation_id=conversation_id, owner_id=caller.owner_scope()
    )
    await session.commit()
    await cancellation.announce(queue, conversation_id)
    await webhooks.after_cancel(engine, queue, conversation_id)
    return ConversationRead.model_validate(conversation)


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 422, 503),
)
async def delete_conversation(
    conversation_id: uuid.UUID,
    session: SessionDep,
    queue: QueueDep,
    caller: PrincipalDep,
    engine: EngineDep,
) -> None:
    """Soft-delete a conversation (an unfinished one is cancelled first, its model call
    stopped)."""
    await service.delete_conversation(
        session, conversation_id=conversation_id, owner_id=caller.owner_scope()
    )
    await session.commit()
    await cancellation.announce(queue, conversation_id)
    await webhooks.after_cancel(engine, queue, conversation_id)
