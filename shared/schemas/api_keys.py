from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from shared.schemas.common import Name128, ReadModel, StrictInput

KeyName = Name128


class ApiKeyCreate(StrictInput):
    name: KeyName | None = Field(default=None, description="A label to tell keys apart.")


class ApiKeyRead(ReadModel):
    """A key as listed: never the secret, only its first characters."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str | None
    prefix: str
    created_at: datetime


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown in this response only; store it now.")
