"""Who is calling: `Authorization: Bearer <key>` resolved to the admin or one user.

The admin key comes from the environment and is compared in constant time; a user key is
hashed and looked up by its hash (one statement, one index probe; no cache), so a revoked
key stops working on every replica with the next request. A poll (`GET /conversations/{id}`)
with a user key looks the key up in the statement that reads the conversation
(`api/routes/conversations.py poll_with_user_key`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import get_engine, get_settings
from shared.api_keys import hash_key, same_secret
from shared.db import driver_connection
from shared.errors import ForbiddenError, NotFoundError, UnauthorizedError
from shared.models import Priority
from shared.repositories import api_keys
from shared.repositories.api_keys import KeyOwner
from shared.settings import Settings

# auto_error=False: a missing header is answered by our 401 in the error contract, not
# FastAPI's 403. The scheme still appears in OpenAPI, so Swagger UI offers "Authorize".
_bearer = HTTPBearer(auto_error=False, description="An API key: the admin's or a user's.")
INVALID_KEY = "Invalid or revoked API key"
# Longer than any key this service issues (or an admin key it would accept is likely to be).
_MAX_KEY_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: the admin (`user_id` None) or the user a key belongs to."""

    user_id: uuid.UUID | None
    key_id: uuid.UUID | None = None
    # The highest priority the key may submit at (the admin's: any).
    max_priority: Priority = Priority.INTERACTIVE

    @property
    def is_admin(self) -> bool:
        return self.user_id is None

    def owner_scope(self) -> uuid.UUID | None:
        """The user whose rows this caller may see; None: every row (the admin)."""
        return self.user_id

    def require_self_or_admin(self, user_id: uuid.UUID, *, not_found: str) -> None:
        """Another user's resource is answered as absent, so ids cannot be probed."""
        if not self.is_admin and self.user_id != user_id:
            raise NotFoundError(not_found)


ADMIN = Principal(user_id=None)


def _presented(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is None or not credentials.credentials:
        return None
    presented = credentials.credentials
    return presented if len(presented) <= _MAX_KEY_LENGTH else None


def _is_admin_key(settings: Settings, presented: str) -> bool:
    admin_key = settings.ADMIN_API_KEY
    return admin_key is not None and same_secret(presented, admin_key.get_secret_value())


def user_key_hash(
    settings: Settings, credentials: HTTPAuthorizationCredentials | None
) -> str | None:
    """The hash to look a presented key up by, when it may be a user's (not missing, not
    too long, not the admin's)."""
    presented = _presented(credentials)
    if presented is None or _is_admin_key(settings, presented):
        return None
    return hash_key(presented)


def principal_of(found: KeyOwner | None, digest: str) -> Principal | None:
    """The user a looked-up key belongs to; None when there is no such key."""
    if found is None or not same_secret(digest, found.key_hash):
        return None
    return Principal(user_id=found.user_id, key_id=found.key_id, max_priority=found.max_priority)


async def _resolve(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal | None:
    presented = _presented(credentials)
    if presented is None:
        return None
    settings = await get_settings(request)
    if _is_admin_key(settings, presented):
        return ADMIN
    digest = hash_key(presented)
    async with driver_connection(await get_engine(request)) as db:
        found = await api_keys.owner_of(db, digest)
    return principal_of(found, digest)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = await _resolve(request, credentials)
    if principal is None:
        raise UnauthorizedError("Missing API key" if credentials is None else INVALID_KEY)
    request.state.principal = principal
    return principal


async def caller_is_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> bool:
    """For open routes (probes) that tell the admin more than anyone else; no database."""
    presented = _presented(credentials)
    return presented is not None and _is_admin_key(await get_settings(request), presented)


async def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("This action needs the admin key")
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
AdminDep = Annotated[Principal, Depends(require_admin)]
CallerIsAdminDep = Annotated[bool, Depends(caller_is_admin)]
