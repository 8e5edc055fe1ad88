from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import PageDep, SessionDep
from api.errors import error_responses
from shared.schemas.users import UserCreate, UserOrder, UserRead, UserUpdate
from shared.services import users as service

router = APIRouter(prefix="/users", tags=["users"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=error_responses(400, 409, 422, 503),
)
async def create_user(data: UserCreate, session: SessionDep) -> UserRead:
    """Register a user. Emails are unique regardless of case (409 when taken)."""
    user = await service.create_user(session, data=data)
    return UserRead.model_validate(user)


@router.get("", response_model=list[UserRead], responses=error_responses(422, 503))
async def list_users(
    session: SessionDep,
    page: PageDep,
    response: Response,
    order_by: Annotated[UserOrder, Query()] = UserOrder.CREATED_AT_DESC,
) -> list[UserRead]:
    """List active users; the total count is in the `X-Total-Count` header."""
    rows, total = await service.list_users(session, page=page, order_by=order_by)
    response.headers["X-Total-Count"] = str(total)
    return [UserRead.model_validate(row) for row in rows]


@router.get("/{user_id}", response_model=UserRead, responses=error_responses(404, 422, 503))
async def get_user(user_id: uuid.UUID, session: SessionDep) -> UserRead:
    """Fetch one active user."""
    return UserRead.model_validate(await service.get_user(session, user_id=user_id))


@router.patch(
    "/{user_id}", response_model=UserRead, responses=error_responses(400, 404, 409, 422, 503)
)
async def update_user(user_id: uuid.UUID, data: UserUpdate, session: SessionDep) -> UserRead:
    """Change a user's email."""
    user = await service.update_user(session, user_id=user_id, data=data)
    return UserRead.model_validate(user)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 422, 503),
)
async def delete_user(user_id: uuid.UUID, session: SessionDep) -> None:
    """Soft-delete a user: it disappears from reads and lists; its email stays reserved."""
    await service.delete_user(session, user_id=user_id)
