"""The FastAPI application factory and its lifespan (engines and pools live here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from loguru import logger

from api.auth import require_admin
from api.errors import error_responses, register_error_handlers
from api.limits import SubmissionLimiter
from api.middleware.edge import EdgeMiddleware
from api.middleware.errors import UnhandledErrorMiddleware
from api.middleware.hot_routes import HotRoutesMiddleware
from api.middleware.http_methods import HttpMethodsMiddleware
from api.middleware.request_limits import RequestLimitsMiddleware
from api.openapi import install_openapi
from api.routes import (
    conversation_events,
    conversations,
    health,
    metrics,
    model_versions,
    queue,
    users,
    webhooks,
)
from api.service_app import ServiceApp
from api.submission import Submissions
from shared.db import create_engine, create_session_factory
from shared.heap import freeze_startup_heap, thaw_heap
from shared.llm.registry import served_providers
from shared.logs import configure_logging
from shared.metrics import create_metrics
from shared.queue import create_queue_pool
from shared.settings import Exposure, Settings, SettingsError, get_settings
from shared.telemetry import instrument_redis, instrument_sqlalchemy, setup_telemetry

PROCESS_NAME = "api"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app (uvicorn: `--factory api.main:create_app`); nothing connects until the
    lifespan starts."""
    if settings is None:
        try:
            settings = get_settings()
        except SettingsError as exc:
            # One line for the operator, not a traceback: the message names each variable.
            raise SystemExit(str(exc)) from None
    configure_logging(settings, process_name=PROCESS_NAME)
    telemetry = setup_telemetry(settings, process_name=PROCESS_NAME)
    tracer_provider = telemetry.tracer_provider

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, process_name=PROCESS_NAME)
        instrument_sqlalchemy(engine, tracer_provider)
        instrument_redis(tracer_provider)
        queue = create_queue_pool(settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine)
        app.state.queue = queue
        app.state.submissions = Submissions(
            settings=settings,
            engine=engine,
            queue=queue,
            limiter=SubmissionLimiter(settings, queue),
            metrics=app.state.metrics,
            providers=served_providers(settings),
        )
        if settings.ADMIN_API_KEY is None:
            logger.warning("admin_key_missing", hint="set ADMIN_API_KEY to manage users and keys")
        logger.info("api_started", environment=settings.ENVIRONMENT.value)
        freeze_startup_heap()
        try:
            yield
        finally:
            thaw_heap()
            await queue.aclose()
            await engine.dispose()
            telemetry.shutdown()
            logger.info("api_stopped")

    app = ServiceApp(
        title="ai-eng-api",
        summary="Submit prompts, let workers answer them, poll for the result.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=settings.OPENAPI_JSON_PATH if settings.openapi_enabled else None,
        docs_url=settings.SWAGGER_UI_PATH
        if settings.openapi_enabled and settings.SWAGGER_UI_ENABLED
        else None,
        redoc_url=None,
        # Any route can fail unexpectedly; the body then is the same error contract.
        responses=error_responses(500),
    )
    app.state.metrics = create_metrics()
    register_error_handlers(app)
    for module in (health, users, model_versions, conversations, conversation_events, webhooks):
        app.include_router(module.router)
    app.include_router(queue.router)
    if settings.metrics_access != Exposure.OFF:
        admin_only = settings.metrics_access == Exposure.ADMIN
        app.include_router(
            metrics.router, dependencies=[Depends(require_admin)] if admin_only else []
        )
    install_openapi(app, settings)
    app.add_middleware(HttpMethodsMiddleware, router=app.router)
    app.add_middleware(UnhandledErrorMiddleware)
    limits = {
        "max_body_bytes": settings.MAX_REQUEST_BODY_BYTES,
        "max_header_bytes": settings.MAX_HEADER_BYTES,
    }
    app.add_middleware(RequestLimitsMiddleware, **limits)
    # Outside FastAPI's own layers (api/service_app.py): the hot routes' plain cases skip every
    # layer but the edge (they apply the limits and the exception handlers themselves), and the
    # edge, outermost, gives every log line of the request its id.
    app.add_outer_layer(lambda inner: HotRoutesMiddleware(inner, fastapi_app=app, **limits))
    app.add_outer_layer(
        lambda inner: EdgeMiddleware(
            inner,
            metrics=app.state.metrics,
            tracer_provider=tracer_provider,
            detail_min_ms=settings.TRACE_DETAIL_MIN_MS,
            trace_fast_reads=settings.TRACE_FAST_READS,
        )
    )
    return app
