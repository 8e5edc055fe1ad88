from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from shared.models import ConversationStatus, Priority
from shared.schemas.common import (
    NO_NUL,
    NO_NUL_NOT_BLANK,
    Probability,
    ReadModel,
    StrictInput,
    Temperature,
    TokenCount,
)

Prompt = Annotated[
    str, StringConstraints(min_length=1, max_length=100_000, pattern=NO_NUL_NOT_BLANK)
]
LongText = Annotated[str, StringConstraints(max_length=100_000, pattern=NO_NUL)]
# Printable ASCII only: no NUL (PostgreSQL text cannot hold it), spaces or control characters.
CallbackUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048, pattern=r"^[hH][tT][tT][pP][sS]?://[!-~]+$"),
]


class ConversationOrder(StrEnum):
    CREATED_AT_DESC = "created_at_desc"
    CREATED_AT_ASC = "created_at_asc"
    LATENCY_MS_ASC = "latency_ms_asc"
    LATENCY_MS_DESC = "latency_ms_desc"


class ConversationCreate(StrictInput):
    user_id: uuid.UUID | None = Field(
        default=None,
        description="The owner. A user key may omit it (it is the key's user) and may not name "
        "another user (403); the admin key must give it.",
    )
    model_version_id: uuid.UUID
    prompt: Prompt
    system_instruction: LongText | None = None
    context: LongText | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    max_tokens: TokenCount | None = None
    response: LongText | None = Field(
        default=None,
        description="Give it to store an answered conversation (201); omit it to have a "
        "worker generate the answer (202).",
    )
    callback_url: CallbackUrl | None = Field(
        default=None,
        description="http(s) URL that receives the conversation, signed (Standard Webhooks), "
        "once it is completed, failed or cancelled; see docs/webhooks.md. Only for a "
        "generated conversation (not with `response`).",
    )
    priority: Priority = Field(
        default=Priority.INTERACTIVE,
        description="How it waits for a worker: `interactive` work overtakes `batch` work, "
        "which still gets its share. A key may be limited to `batch`; a higher priority asked "
        "for is lowered to the key's ceiling (the response says which one it got).",
    )


class ConversationUpdate(StrictInput):
    """Only the stored answer of a completed conversation may be edited."""

    response: LongText


class ConversationRead(ReadModel):
    id: uuid.UUID
    user_id: uuid.UUID
    model_version_id: uuid.UUID
    prompt: str
    system_instruction: str | None
    context: str | None
    response: str | None
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    status: ConversationStatus
    error_code: str | None = Field(
        description="Why it failed; while `pending` after a failed attempt, why it is retried."
    )
    error_message: str | None
    next_attempt_at: datetime | None = Field(
        description="While a retry waits: the earliest time its next attempt starts."
    )
    attempts: int
    prompt_version: str | None
    finish_reason: str | None
    trace_id: str | None
    callback_url: str | None = Field(description="Where the finished conversation is delivered.")
    priority: Priority
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    latency_ms: float | None
    queue_wait_ms: float | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    is_active: bool
