from __future__ import annotations

from fastapi import APIRouter, Response

from api.auth import AdminDep
from api.deps import PageDep, SessionDep
from api.errors import error_responses
from shared.repositories.queue_counts import queued_by_user
from shared.schemas.queue import QueuedByUser

router = APIRouter(prefix="/queue", tags=["queue"], responses=error_responses(401))


@router.get("/users", response_model=list[QueuedByUser], responses=error_responses(403, 422, 503))
async def list_queued_by_user(
    session: SessionDep, page: PageDep, response: Response, _: AdminDep
) -> list[QueuedByUser]:
    """Per user, the conversations waiting for a worker (`pending`) and being answered
    (`running`) (admin): only users with any, the most unfinished first. The number of such
    users is in the `X-Total-Count` header."""
    rows, total = await queued_by_user(session, page=page)
    response.headers["X-Total-Count"] = str(total)
    return rows
