"""Request-scoped dependencies, as `Annotated` aliases routes can declare.

What the lifespan builds lives in `app.state`, which is untyped; these are the only readers of
it, so a route states what it needs with a type (`SettingsDep`, `MetricsDep`, ...). They are
`async def` although they never wait: FastAPI runs a plain `def` dependency in a worker
thread, a hand-off that costs more than the whole lookup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from arq.connections import ArqRedis
from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.db import SessionFactory, unit_of_work
from shared.metrics import Metrics
from shared.schemas.common import MAX_OFFSET, Page
from shared.settings import Settings

if TYPE_CHECKING:
    from api.submission import Submissions


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_session_factory(request: Request) -> SessionFactory:
    factory: SessionFactory = request.app.state.session_factory
    return factory


_READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One unit of work per request: committed before the response leaves, or rolled back.

    A read runs its statements without a transaction (no BEGIN, no COMMIT: a round trip
    each), since it writes nothing and each of its queries is consistent on its own.
    """
    async with unit_of_work(await get_session_factory(request)) as session:
        if request.method in _READ_METHODS:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


async def get_queue(request: Request) -> ArqRedis:
    queue: ArqRedis = request.app.state.queue
    return queue


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_submissions(request: Request) -> Submissions:
    submissions: Submissions = request.app.state.submissions
    return submissions


async def get_page(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 50,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip (at most 2^63 - 1)")
    ] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit happens before the response is sent, so a failed commit
# becomes an error response instead of a success the database never saw.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
# For the hot routes that run their statements on the driver (`shared.db.driver_connection`).
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SessionFactoryDep = Annotated[SessionFactory, Depends(get_session_factory)]
QueueDep = Annotated[ArqRedis, Depends(get_queue)]
PageDep = Annotated[Page, Depends(get_page)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SubmissionsDep = Annotated["Submissions", Depends(get_submissions)]
