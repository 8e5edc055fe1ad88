"""Creating, listing and revoking a user's API keys."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from shared.api_keys import generate_key
from shared.errors import ConflictError, ForbiddenError, NotFoundError
from shared.models import ApiKey, Priority
from shared.repositories.api_keys import ApiKeyRepository
from shared.schemas.api_keys import ApiKeyCreate
from shared.services.users import get_user

# Enough for every device and script a person runs; a bound so keys are not a resource to farm.
MAX_LIVE_KEYS_PER_USER = 20
API_KEY_NOT_FOUND = "API key not found"


async def create_api_key(
    session: AsyncSession, *, user_id: uuid.UUID, data: ApiKeyCreate, ceiling: Priority
) -> tuple[ApiKey, str]:
    """A new key for an active user: the stored row and the secret, which is never stored.
    Its priority ceiling is at most `ceiling`, the creating key's."""
    max_priority = data.max_priority or ceiling
    if max_priority.at_most(ceiling) is not max_priority:
        raise ForbiddenError(
            f"This key may only make keys with a priority ceiling up to '{ceiling.value}'",
            details={"max_priority": ceiling.value},
        )
    await get_user(session, user_id=user_id, for_update=True)
    repo = ApiKeyRepository(session)
    if await repo.count_live(user_id) >= MAX_LIVE_KEYS_PER_USER:
        raise ConflictError(
            f"A user may hold at most {MAX_LIVE_KEYS_PER_USER} live keys; revoke one first",
            details={"max_keys": MAX_LIVE_KEYS_PER_USER},
        )
    new = generate_key()
    key = await repo.add(
        ApiKey(
            user_id=user_id,
            name=data.name,
            prefix=new.prefix,
            key_hash=new.digest,
            max_priority=max_priority.value,
        )
    )
    return key, new.secret


async def list_api_keys(session: AsyncSession, *, user_id: uuid.UUID) -> list[ApiKey]:
    await get_user(session, user_id=user_id)
    return await ApiKeyRepository(session).live_keys(user_id)


async def revoke_api_key(session: AsyncSession, *, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoked at commit; every API replica checks the database on each request, so at once."""
    if not await ApiKeyRepository(session).revoke(user_id, key_id):
        raise NotFoundError(API_KEY_NOT_FOUND)
