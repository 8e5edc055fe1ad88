from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from shared.models import Priority
from shared.schemas.common import Name128, ReadModel, StrictInput

KeyName = Name128


class ApiKeyCreate(StrictInput):
    name: KeyName | None = Field(default=None, description="A label to tell keys apart.")
    max_priority: Priority | None = Field(
        default=None,
        description="The highest priority the key may submit at: `batch` keeps its work from "
        "overtaking interactive work. Default: the ceiling of the key making it (the admin's: "
        "`interactive`); a user's key may not make a key above its own ceiling (403).",
    )


class ApiKeyRead(ReadModel):
    """A key as listed: never the secret, only its first characters."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str | None
    prefix: str
    max_priority: Priority
    created_at: datetime


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown in this response only; store it now.")
