from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from loguru import logger
from sqlalchemy import text

from api.auth import CallerIsAdminDep
from api.errors import error_responses
from api.queue_status import sample_queue

router = APIRouter(prefix="/health", tags=["health"])

_OK = {"status": "ok"}


async def _database_ok(request: Request) -> bool:
    try:
        async with request.app.state.session_factory() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        logger.warning("health_database_failed", error=type(exc).__name__)
        return False
    return True


async def _redis_ok(request: Request) -> bool:
    try:
        await request.app.state.queue.ping()
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
async def database(request: Request) -> Any:
    """The database answers a query."""
    if await _database_ok(request):
        return _OK
    return _unavailable({"database": "unreachable"})


@router.get(
    "/ready",
    responses=error_responses(503),
    # The key is optional here (probes send none); the empty requirement says so.
    openapi_extra={"security": [{}]},
)
async def ready(request: Request, admin: CallerIsAdminDep) -> Any:
    """Ready for traffic: the database and Redis both answer.

    Open to probes, which get the status alone. With the admin key the answer also names
    each check and tells how the queue is doing (jobs waiting, whether any worker heartbeat
    is fresh, the oldest pending conversation); that informs, it does not make the API
    unready, since the API accepts work with no worker running.
    """
    checks = {
        "database": "ok" if await _database_ok(request) else "unreachable",
        "redis": "ok" if await _redis_ok(request) else "unreachable",
    }
    if not all(value == "ok" for value in checks.values()):
        return _unavailable(checks if admin else None)
    if not admin:
        return _OK
    state = request.app.state
    status = await sample_queue(state.queue, state.session_factory, state.settings.QUEUE_NAME)
    return {"status": "ok", "checks": checks, "queue": asdict(status)}
