from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, func, select

from shared.models import User
from shared.repositories.base import RecordRepository
from shared.schemas.users import UserOrder

USER_ORDER: dict[UserOrder, ColumnElement[Any]] = {
    UserOrder.CREATED_AT_DESC: User.created_at.desc(),
    UserOrder.CREATED_AT_ASC: User.created_at.asc(),
    UserOrder.EMAIL_ASC: User.email.asc(),
    UserOrder.EMAIL_DESC: User.email.desc(),
}


class UserRepository(RecordRepository[User]):
    model = User

    async def email_taken(self, email: str, *, excluding: uuid.UUID | None = None) -> bool:
        stmt = select(User.id).where(func.lower(User.email) == email.lower())
        if excluding is not None:
            stmt = stmt.where(User.id != excluding)
        return (await self.session.scalar(stmt.limit(1))) is not None
