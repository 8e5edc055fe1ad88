"""A conversation's webhook delivery log (docs/webhooks.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import PrincipalDep
from api.deps import EngineDep
from api.errors import error_responses
from shared.errors import NotFoundError
from shared.services.conversations import CONVERSATION_NOT_FOUND
from shared.webhook_deliveries import read_log

router = APIRouter(prefix="/conversations", tags=["conversations"], responses=error_responses(401))


class WebhookAttempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; None if none came.")
    error: str | None = Field(description="Why the attempt failed; None when it was delivered.")
    duration_ms: float | None


class WebhookDeliveryRead(BaseModel):
    conversation_id: uuid.UUID
    callback_url: str | None
    state: Literal["none", "waiting", "pending", "delivered", "failed"] = Field(
        description="`none`: no callback_url; `waiting`: the conversation has not ended; "
        "`pending`: being delivered or retried; `delivered`: a 2xx answer; `failed`: out of "
        "attempts, or the destination is not allowed."
    )
    webhook_id: str | None = Field(description="The `webhook-id` header, the same on retries.")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="While pending: the next attempt.")
    delivered_at: datetime | None
    history: list[WebhookAttempt] = Field(description="Every attempt, oldest first.")


def _read(row: dict[str, Any]) -> WebhookDeliveryRead:
    if row["state"] is None:
        state: Literal["none", "waiting"] = "none" if row["callback_url"] is None else "waiting"
        return WebhookDeliveryRead(
            conversation_id=row["conversation_id"],
            callback_url=row["callback_url"],
            state=state,
            webhook_id=None,
            attempts=0,
            last_status_code=None,
            last_error=None,
            last_attempt_at=None,
            next_attempt_at=None,
            delivered_at=None,
            history=[],
        )
    pending = row["state"] == "pending"
    return WebhookDeliveryRead(
        conversation_id=row["conversation_id"],
        callback_url=row["url"],
        state=row["state"],
        webhook_id=row["webhook_id"],
        attempts=row["attempts"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        last_attempt_at=row["last_attempt_at"],
        next_attempt_at=row["next_attempt_at"] if pending else None,
        delivered_at=row["delivered_at"],
        history=row["history"],
    )


@router.get(
    "/{conversation_id}/webhook",
    response_model=WebhookDeliveryRead,
    responses=error_responses(404, 422, 503),
)
async def get_webhook_delivery(
    conversation_id: uuid.UUID, engine: EngineDep, caller: PrincipalDep
) -> WebhookDeliveryRead:
    """The delivery of the conversation's webhook: its state, attempts, the last status code
    or error, when it was delivered or is tried next, and every attempt.

    Readable by whoever may read the conversation (another user's is 404)."""
    row = await read_log(engine, conversation_id, caller.owner_scope())
    if row is None:
        raise NotFoundError(CONVERSATION_NOT_FOUND)
    return _read(row)
