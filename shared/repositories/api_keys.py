from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import DriverConnection, statement_span
from shared.models import ApiKey, Priority, User

# Every authenticated request with a user key runs it: written out, run on the driver.
OWNER_OF = f"""
SELECT k.id, k.user_id, k.key_hash, k.max_priority
FROM "{ApiKey.__tablename__}" AS k JOIN "{User.__tablename__}" AS u ON u.id = k.user_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.is_active
"""  # noqa: S608  (names from the mapped schema; the value is bound)


@dataclass(frozen=True, slots=True)
class KeyOwner:
    key_id: uuid.UUID
    user_id: uuid.UUID
    key_hash: str  # as stored, compared in constant time by the caller
    max_priority: Priority


async def owner_of(db: DriverConnection, key_hash: str) -> KeyOwner | None:
    """The live key of an active user with this hash; one index probe."""
    with statement_span("SELECT", ApiKey.__tablename__):
        row = await db.fetchrow(OWNER_OF, key_hash)
    return None if row is None else key_owner(row)


def key_owner(row: Mapping[str, Any], prefix: str = "") -> KeyOwner:
    """The `KeyOwner` of a row with `OWNER_OF`'s columns (named `prefix` + column)."""
    return KeyOwner(
        row[prefix + "id"],
        row[prefix + "user_id"],
        row[prefix + "key_hash"],
        Priority(row[prefix + "max_priority"]),
    )


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        await self.session.flush()  # eager defaults: the INSERT returns id and created_at
        return key

    async def live_keys(self, user_id: uuid.UUID) -> list[ApiKey]:
        stmt = (
            select(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at, ApiKey.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def count_live(self, user_id: uuid.UUID) -> int:
        stmt = select(func.count()).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        return int(await self.session.scalar(stmt) or 0)

    async def revoke(self, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        stmt = (
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(ApiKey.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None
