from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from shared.models.user import MAX_QUEUE_WEIGHT
from shared.schemas.common import JsonInteger, ReadModel, StrictInput

# Something@something.something, with no whitespace or control character (Unicode Cc) anywhere.
_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f-\x9f]"
Email = Annotated[
    str,
    StringConstraints(
        min_length=3,
        max_length=320,
        pattern=rf"^{_EMAIL_CHAR}+@{_EMAIL_CHAR}+\.{_EMAIL_CHAR}+$",
    ),
]


class UserOrder(StrEnum):
    CREATED_AT_DESC = "created_at_desc"
    CREATED_AT_ASC = "created_at_asc"
    EMAIL_ASC = "email_asc"
    EMAIL_DESC = "email_desc"


QueueWeight = Annotated[
    JsonInteger,
    Field(
        ge=1,
        le=MAX_QUEUE_WEIGHT,
        description="The user's share of the workers while other users' work waits too: "
        "weight 2 starts twice as many conversations as weight 1.",
    ),
]


class UserCreate(StrictInput):
    email: Email
    queue_weight: QueueWeight = 1


class UserUpdate(StrictInput):
    non_nullable = frozenset({"email", "queue_weight"})

    email: Email | None = None
    queue_weight: QueueWeight | None = None


class UserRead(ReadModel):
    id: uuid.UUID
    email: str
    queue_weight: int
    created_at: datetime
    updated_at: datetime
    is_active: bool
