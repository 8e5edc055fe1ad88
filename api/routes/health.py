from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from loguru import logger
from sqlalchemy import text

from api.auth import CallerIsAdminDep
from api.deps import QueueDep, SessionFactoryDep, SettingsDep
from api.errors import error_responses
from api.queue_status import sample_queue, sample_servers
from shared.db import SessionFactory

router = APIRouter(prefix="/health", tags=["health"])

_OK = {"status": "ok"}


async def _database_ok(session_factory: SessionFactory) -> bool:
    try:
        async with session_factory() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        logger.warning("health_database_failed", error=type(exc).__name__)
        return False
    return True


async def _redis_ok(queue: ArqRedis) -> bool:
    try:
        await queue.ping()
    except Exception as exc:
        logger.warning("health_redis_failed", error=type(exc).__name__)
        return False
    return True


def _unavailable(checks: dict[str, Any] | None) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={
            "code": "service_unavailable",
            "message": "A dependency is unavailable",
            "details": checks,
        },
        headers={"Retry-After": "5"},
    )


@router.get("/live", responses={200: {"content": {"application/json": {"example": _OK}}}})
async def live() -> dict[str, str]:
    """The process is up and serving (no dependency is checked)."""
    return _OK


@router.get("/db", responses=error_responses(503))
async def database(session_factory: SessionFactoryDep) -> Any:
    """The database answers a query."""
    if await _database_ok(session_factory):
        return _OK
    return _unavailable({"database": "unreachable"})


@router.get(
    "/ready",
    responses=error_responses(503),
    # The key is optional here (probes send none); the empty requirement says so.
    openapi_extra={"security": [{}]},
)
async def ready(
    admin: CallerIsAdminDep,
    queue: QueueDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> Any:
    """Ready for traffic: the database and Redis both answer.

    Open to probes, which get the status alone. With the admin key the answer also names
    each check and tells how the queue is doing (jobs waiting, whether any worker heartbeat
    is fresh, the oldest pending conversation) and how each model server is doing (its
    capacity, the calls all workers have in flight to it, whether it is set aside for
    refusing connections); that informs, it does not make the API unready, since the API
    accepts work with no worker running and a server down is left out by the workers.
    """
    checks = {
        "database": "ok" if await _database_ok(session_factory) else "unreachable",
        "redis": "ok" if await _redis_ok(queue) else "unreachable",
    }
    if not all(value == "ok" for value in checks.values()):
        return _unavailable(checks if admin else None)
    if not admin:
        return _OK
    status = await sample_queue(queue, session_factory, settings.QUEUE_NAME)
    servers = await sample_servers(queue, settings)
    return {
        "status": "ok",
        "checks": checks,
        "queue": status.details(),
        "model_servers": None if servers is None else [s.details() for s in servers],
    }
