from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from shared.schemas.common import Name128, ReadModel, StrictInput, Temperature, TokenCount


class ModelVersionOrder(StrEnum):
    CREATED_AT_DESC = "created_at_desc"
    CREATED_AT_ASC = "created_at_asc"
    MODEL_NAME_ASC = "model_name_asc"
    MODEL_NAME_DESC = "model_name_desc"


class ModelVersionCreate(StrictInput):
    provider: Name128
    model_name: Name128
    version_tag: Name128
    max_tokens_cap: TokenCount | None = None
    default_temperature: Temperature | None = None


class ModelVersionUpdate(StrictInput):
    non_nullable = frozenset({"provider", "model_name", "version_tag"})

    provider: Name128 | None = None
    model_name: Name128 | None = None
    version_tag: Name128 | None = None
    max_tokens_cap: TokenCount | None = None
    default_temperature: Temperature | None = None


class ModelVersionRead(ReadModel):
    id: uuid.UUID
    provider: str
    model_name: str
    version_tag: str
    max_tokens_cap: int | None
    default_temperature: float | None
    created_at: datetime
    updated_at: datetime
    is_active: bool
