from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from shared.schemas.common import ReadModel, StrictInput

KeyName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"
    ),
]


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
