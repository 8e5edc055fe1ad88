from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import ConflictError, NotFoundError
from shared.models import User
from shared.models.user import EMAIL_UNIQUE_INDEX
from shared.repositories.users import USER_ORDER, UserRepository
from shared.schemas.common import Page
from shared.schemas.users import UserCreate, UserOrder, UserUpdate

USER_NOT_FOUND = "User not found"


def _email_conflict(email: str) -> ConflictError:
    return ConflictError("Email already registered", details={"email": email})


async def create_user(session: AsyncSession, *, data: UserCreate) -> User:
    repo = UserRepository(session)
    conflict = _email_conflict(data.email)
    if await repo.email_taken(data.email):
        raise conflict
    # A concurrent request may take the email after the check: the unique index decides.
    user = User(email=data.email, queue_weight=data.queue_weight)
    return await repo.add(user, violations={EMAIL_UNIQUE_INDEX: conflict})


async def get_user(session: AsyncSession, *, user_id: uuid.UUID, for_update: bool = False) -> User:
    user = await UserRepository(session).get(user_id, for_update=for_update)
    if user is None:
        raise NotFoundError(USER_NOT_FOUND)
    return user


async def list_users(
    session: AsyncSession, *, page: Page, order_by: UserOrder
) -> tuple[list[User], int]:
    return await UserRepository(session).list_page(
        order_by=[USER_ORDER[order_by]], limit=page.limit, offset=page.offset
    )


async def update_user(session: AsyncSession, *, user_id: uuid.UUID, data: UserUpdate) -> User:
    repo = UserRepository(session)
    user = await get_user(session, user_id=user_id)
    if data.queue_weight is not None:
        user.queue_weight = data.queue_weight
    if data.email is None or data.email == user.email:
        return await repo.refresh(user)
    conflict = _email_conflict(data.email)
    if await repo.email_taken(data.email, excluding=user.id):
        raise conflict
    user.email = data.email
    return await repo.refresh(user, violations={EMAIL_UNIQUE_INDEX: conflict})


async def delete_user(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    user = await get_user(session, user_id=user_id)
    user.is_active = False
    await session.flush()
