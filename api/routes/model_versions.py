from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.auth import AdminDep, PrincipalDep
from api.deps import PageDep, SessionDep
from api.errors import error_responses
from shared.schemas.model_versions import (
    ModelVersionCreate,
    ModelVersionOrder,
    ModelVersionRead,
    ModelVersionUpdate,
)
from shared.services import model_versions as service

router = APIRouter(
    prefix="/model-versions", tags=["model-versions"], responses=error_responses(401)
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelVersionRead,
    responses=error_responses(400, 403, 409, 422, 503),
)
async def create_model_version(
    data: ModelVersionCreate, session: SessionDep, _: AdminDep
) -> ModelVersionRead:
    """Register a model a conversation may use (admin): `provider`, `model_name`,
    `version_tag`."""
    model_version = await service.create_model_version(session, data=data)
    return ModelVersionRead.model_validate(model_version)


@router.get("", response_model=list[ModelVersionRead], responses=error_responses(422, 503))
async def list_model_versions(
    session: SessionDep,
    page: PageDep,
    response: Response,
    _: PrincipalDep,
    order_by: Annotated[ModelVersionOrder, Query()] = ModelVersionOrder.CREATED_AT_DESC,
) -> list[ModelVersionRead]:
    """List active model versions; the total count is in the `X-Total-Count` header."""
    rows, total = await service.list_model_versions(session, page=page, order_by=order_by)
    response.headers["X-Total-Count"] = str(total)
    return [ModelVersionRead.model_validate(row) for row in rows]


@router.get(
    "/{model_version_id}",
    response_model=ModelVersionRead,
    responses=error_responses(404, 422, 503),
)
async def get_model_version(
    model_version_id: uuid.UUID, session: SessionDep, _: PrincipalDep
) -> ModelVersionRead:
    """Fetch one active model version."""
    model_version = await service.get_model_version(session, model_version_id=model_version_id)
    return ModelVersionRead.model_validate(model_version)


@router.patch(
    "/{model_version_id}",
    response_model=ModelVersionRead,
    responses=error_responses(400, 403, 404, 409, 422, 503),
)
async def update_model_version(
    model_version_id: uuid.UUID, data: ModelVersionUpdate, session: SessionDep, _: AdminDep
) -> ModelVersionRead:
    """Change any of a model version's fields (admin)."""
    model_version = await service.update_model_version(
        session, model_version_id=model_version_id, data=data
    )
    return ModelVersionRead.model_validate(model_version)


@router.delete(
    "/{model_version_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(403, 404, 422, 503),
)
async def delete_model_version(
    model_version_id: uuid.UUID, session: SessionDep, _: AdminDep
) -> None:
    """Soft-delete a model version (admin); new conversations can no longer use it."""
    await service.delete_model_version(session, model_version_id=model_version_id)
