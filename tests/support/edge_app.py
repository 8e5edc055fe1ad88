"""A small app behind the API's edge layer, and one request to it (the tracing tests')."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from api.middleware.edge import EdgeMiddleware
from shared.metrics import create_metrics
from shared.telemetry import Telemetry


def behind_edge(
    app: FastAPI, telemetry: Telemetry, *, detail_min_ms: int, trace_fast_reads: bool
) -> FastAPI:
    """`app` with the edge layer outermost, tracing to `telemetry`'s provider."""
    app.add_middleware(
        EdgeMiddleware,
        metrics=create_metrics(process_metrics=False),
        tracer_provider=telemetry.tracer_provider,
        detail_min_ms=detail_min_ms,
        trace_fast_reads=trace_fast_reads,
    )
    return app


async def call(
    app: FastAPI, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """One request, answered in-process (an unhandled error as the app's 500)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.request(method, path, headers=headers)
