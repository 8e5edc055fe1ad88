from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints

from shared.schemas.common import ReadModel, StrictInput

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


class UserCreate(StrictInput):
    email: Email


class UserUpdate(StrictInput):
    non_nullable = frozenset({"email"})

    email: Email | None = None


class UserRead(ReadModel):
    id: uuid.UUID
    email: str
    created_at: datetime
    updated_at: datetime
    is_active: bool
