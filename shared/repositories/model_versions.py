from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, select

from shared.models import ModelVersion
from shared.repositories.base import RecordRepository
from shared.schemas.model_versions import ModelVersionOrder

MODEL_VERSION_ORDER: dict[ModelVersionOrder, ColumnElement[Any]] = {
    ModelVersionOrder.CREATED_AT_DESC: ModelVersion.created_at.desc(),
    ModelVersionOrder.CREATED_AT_ASC: ModelVersion.created_at.asc(),
    ModelVersionOrder.MODEL_NAME_ASC: ModelVersion.model_name.asc(),
    ModelVersionOrder.MODEL_NAME_DESC: ModelVersion.model_name.desc(),
}


class ModelVersionRepository(RecordRepository[ModelVersion]):
    model = ModelVersion

    async def triple_taken(
        self,
        *,
        provider: str,
        model_name: str,
        version_tag: str,
        excluding: uuid.UUID | None = None,
    ) -> bool:
        stmt = select(ModelVersion.id).where(
            ModelVersion.is_active,
            ModelVersion.provider == provider,
            ModelVersion.model_name == model_name,
            ModelVersion.version_tag == version_tag,
        )
        if excluding is not None:
            stmt = stmt.where(ModelVersion.id != excluding)
        return (await self.session.scalar(stmt.limit(1))) is not None
