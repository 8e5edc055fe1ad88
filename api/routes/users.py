from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from api.auth import AdminDep, PrincipalDep
from api.deps import PageDep, SessionDep
from api.errors import error_responses
from shared.schemas.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from shared.schemas.users import UserCreate, UserOrder, UserRead, UserUpdate
from shared.services import api_keys as key_service
from shared.services import users as service
from shared.services.users import USER_NOT_FOUND

router = APIRouter(prefix="/users", tags=["users"], responses=error_responses(401))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=error_responses(400, 403, 409, 422, 503),
)
async def create_user(data: UserCreate, session: SessionDep, _: AdminDep) -> UserRead:
    """Register a user (admin). Emails are unique regardless of case (409 when taken)."""
    user = await service.create_user(session, data=data)
    return UserRead.model_validate(user)


@router.get("", response_model=list[UserRead], responses=error_responses(403, 422, 503))
async def list_users(
    session: SessionDep,
    page: PageDep,
    response: Response,
    _: AdminDep,
    order_by: Annotated[UserOrder, Query()] = UserOrder.CREATED_AT_DESC,
) -> list[UserRead]:
    """List active users (admin); the total count is in the `X-Total-Count` header."""
    rows, total = await service.list_users(session, page=page, order_by=order_by)
    response.headers["X-Total-Count"] = str(total)
    return [UserRead.model_validate(row) for row in rows]


@router.get("/{user_id}", response_model=UserRead, responses=error_responses(404, 422, 503))
async def get_user(user_id: uuid.UUID, session: SessionDep, caller: PrincipalDep) -> UserRead:
    """Fetch one active user (the admin: any; a user key: itself)."""
    caller.require_self_or_admin(user_id, not_found=USER_NOT_FOUND)
    return UserRead.model_validate(await service.get_user(session, user_id=user_id))


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    responses=error_responses(400, 403, 404, 409, 422, 503),
)
async def update_user(
    user_id: uuid.UUID, data: UserUpdate, session: SessionDep, _: AdminDep
) -> UserRead:
    """Change a user's email (admin)."""
    user = await service.update_user(session, user_id=user_id, data=data)
    return UserRead.model_validate(user)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(403, 404, 422, 503),
)
async def delete_user(user_id: uuid.UUID, session: SessionDep, _: AdminDep) -> None:
    """Soft-delete a user (admin): gone from reads and lists, its keys stop working, its email
    stays reserved."""
    await service.delete_user(session, user_id=user_id)


@router.post(
    "/{user_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=error_responses(400, 403, 404, 409, 422, 503),
)
async def create_api_key(
    user_id: uuid.UUID,
    session: SessionDep,
    caller: PrincipalDep,
    data: Annotated[ApiKeyCreate | None, Body()] = None,
) -> ApiKeyCreated:
    """Issue an API key for a user (the admin, or the user itself).

    The secret `key` is in this response only: only its hash is stored.
    """
    caller.require_self_or_admin(user_id, not_found=USER_NOT_FOUND)
    key, secret = await key_service.create_api_key(
        session, user_id=user_id, data=data or ApiKeyCreate(), ceiling=caller.max_priority
    )
    return ApiKeyCreated.model_validate(
        {**ApiKeyRead.model_validate(key).model_dump(), "key": secret}
    )


@router.get(
    "/{user_id}/api-keys",
    response_model=list[ApiKeyRead],
    responses=error_responses(404, 422, 503),
)
async def list_api_keys(
    user_id: uuid.UUID, session: SessionDep, caller: PrincipalDep
) -> list[ApiKeyRead]:
    """A user's live keys, without their secrets (the admin, or the user itself)."""
    caller.require_self_or_admin(user_id, not_found=USER_NOT_FOUND)
    keys = await key_service.list_api_keys(session, user_id=user_id)
    return [ApiKeyRead.model_validate(key) for key in keys]


@router.delete(
    "/{user_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 422, 503),
)
async def revoke_api_key(
    user_id: uuid.UUID, key_id: uuid.UUID, session: SessionDep, caller: PrincipalDep
) -> None:
    """Revoke a key (the admin, or the user itself); refused on every replica from now on."""
    caller.require_self_or_admin(user_id, not_found=USER_NOT_FOUND)
    await key_service.revoke_api_key(session, user_id=user_id, key_id=key_id)
