from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import ConflictError, NotFoundError
from shared.models import ModelVersion
from shared.models.model_version import ACTIVE_TRIPLE_UNIQUE_INDEX
from shared.repositories.base import Violations
from shared.repositories.model_versions import MODEL_VERSION_ORDER, ModelVersionRepository
from shared.schemas.common import Page
from shared.schemas.model_versions import ModelVersionCreate, ModelVersionOrder, ModelVersionUpdate

MODEL_VERSION_NOT_FOUND = "Model version not found"


async def _ensure_unique(
    repo: ModelVersionRepository,
    *,
    provider: str,
    model_name: str,
    version_tag: str,
    excluding: uuid.UUID | None = None,
) -> Violations:
    """409 when an active version has the triple; else the same 409 for the unique index,
    which decides when a concurrent request registers the triple after this check."""
    conflict = ConflictError(
        "Model version already registered",
        details={"provider": provider, "model_name": model_name, "version_tag": version_tag},
    )
    if await repo.triple_taken(
        provider=provider, model_name=model_name, version_tag=version_tag, excluding=excluding
    ):
        raise conflict
    return {ACTIVE_TRIPLE_UNIQUE_INDEX: conflict}


async def create_model_version(session: AsyncSession, *, data: ModelVersionCreate) -> ModelVersion:
    repo = ModelVersionRepository(session)
    violations = await _ensure_unique(
        repo, provider=data.provider, model_name=data.model_name, version_tag=data.version_tag
    )
    return await repo.add(ModelVersion(**data.model_dump()), violations=violations)


async def get_model_version(session: AsyncSession, *, model_version_id: uuid.UUID) -> ModelVersion:
    model_version = await ModelVersionRepository(session).get(model_version_id)
    if model_version is None:
        raise NotFoundError(MODEL_VERSION_NOT_FOUND)
    return model_version


async def list_model_versions(
    session: AsyncSession, *, page: Page, order_by: ModelVersionOrder
) -> tuple[list[ModelVersion], int]:
    return await ModelVersionRepository(session).list_page(
        order_by=[MODEL_VERSION_ORDER[order_by]], limit=page.limit, offset=page.offset
    )


async def update_model_version(
    session: AsyncSession, *, model_version_id: uuid.UUID, data: ModelVersionUpdate
) -> ModelVersion:
    repo = ModelVersionRepository(session)
    model_version = await get_model_version(session, model_version_id=model_version_id)
    changes = data.model_dump(exclude_unset=True)
    merged = {
        key: changes.get(key, getattr(model_version, key))
        for key in ("provider", "model_name", "version_tag")
    }
    violations = await _ensure_unique(repo, excluding=model_version.id, **merged)
    for key, value in changes.items():
        setattr(model_version, key, value)
    return await repo.refresh(model_version, violations=violations)


async def delete_model_version(session: AsyncSession, *, model_version_id: uuid.UUID) -> None:
    model_version = await get_model_version(session, model_version_id=model_version_id)
    model_version.is_active = False
    await session.flush()
