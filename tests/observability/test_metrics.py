"""Metrics: definitions, the API's HTTP middleware, the worker's scrape endpoint."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace import TracerProvider

from api.middleware.edge import EdgeMiddleware
from shared.metrics import Metrics, create_metrics, render_metrics
from tests.support.auth import ADMIN_HEADERS
from worker.metrics_server import start_metrics_server

METRIC_NAMES = [
    "http_requests_total",
    "http_request_duration_seconds",
    "conversations_submitted_total",
    "conversations_completed_total",
    "conversations_failed_total",
    "job_duration_seconds",
    "queue_wait_seconds",
    "llm_latency_seconds",
    "llm_tokens_total",
    "job_retries_total",
    "queue_depth",
    "oldest_pending_age_seconds",
    "workers_alive",
]

# Model metrics are labelled by the model version's id, which the registry bounds.
MODEL_VERSION_ID = "0b6e1c8e-3f1a-4c41-9a55-2f9f7f1d3a10"


def test_render_lists_every_metric() -> None:
    metrics = create_metrics()
    metrics.llm_tokens_total.labels(direction="input", model_version_id=MODEL_VERSION_ID).inc(12)
    body, content_type = render_metrics(metrics.registry)
    text = body.decode()
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    assert (
        f'llm_tokens_total{{direction="input",model_version_id="{MODEL_VERSION_ID}"}} 12.0' in text
    )
    assert "process_resident_memory_bytes" in text
    assert content_type.startswith("text/plain")


def test_each_factory_call_has_its_own_registry() -> None:
    first, second = create_metrics(), create_metrics(process_metrics=False)
    first.conversations_submitted_total.labels(mode="queued").inc()
    assert first.registry.get_sample_value("conversations_submitted_total", {"mode": "queued"}) == 1
    assert (
        second.registry.get_sample_value("conversations_submitted_total", {"mode": "queued"})
        is None
    )


@pytest.fixture
def metrics() -> Metrics:
    return create_metrics(process_metrics=False)


@pytest.fixture
def app(metrics: Metrics) -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/v1")

    @app.get("/conversations/{conversation_id}")
    async def read(conversation_id: str) -> dict[str, str]:
        return {"id": conversation_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    @router.post("/items/{item_id}", status_code=201)
    async def create(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.include_router(router)
    app.add_middleware(
        EdgeMiddleware,
        metrics=metrics,
        tracer_provider=TracerProvider(),
        detail_min_ms=0,
        trace_fast_reads=True,
    )
    return app


def _count(metrics: Metrics, method: str, route: str, status: str) -> float | None:
    labels = {"method": method, "route": route, "status": status}
    return metrics.registry.get_sample_value("http_requests_total", labels)


async def test_middleware_labels_by_route_template_and_status(
    app: FastAPI, metrics: Metrics
) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=ADMIN_HEADERS
    ) as client:
        assert (await client.get("/conversations/a")).status_code == 200
        assert (await client.get("/conversations/b")).status_code == 200
        assert (await client.post("/v1/items/7")).status_code == 201
        assert (await client.get("/nowhere/1")).status_code == 404
        assert (await client.delete("/conversations/a")).status_code == 405
        assert (await client.get("/boom")).status_code == 500

    assert _count(metrics, "GET", "/conversations/{conversation_id}", "200") == 2
    assert _count(metrics, "POST", "/v1/items/{item_id}", "201") == 1
    assert _count(metrics, "GET", "unmatched", "404") == 1
    assert _count(metrics, "DELETE", "/conversations/{conversation_id}", "405") == 1
    assert _count(metrics, "GET", "/boom", "500") == 1
    duration_count = metrics.registry.get_sample_value(
        "http_request_duration_seconds_count",
        {"method": "GET", "route": "/conversations/{conversation_id}"},
    )
    assert duration_count == 2
    routes = {
        sample.labels["route"]
        for family in metrics.registry.collect()
        if family.name == "http_requests"
        for sample in family.samples
    }
    assert routes == {
        "/conversations/{conversation_id}",
        "/v1/items/{item_id}",
        "unmatched",
        "/boom",
    }


async def test_unknown_methods_share_one_label(app: FastAPI, metrics: Metrics) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=ADMIN_HEADERS
    ) as client:
        await client.request("BREW", "/conversations/a")
    assert _count(metrics, "OTHER", "/conversations/{conversation_id}", "405") == 1


async def _raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    await writer.wait_closed()
    return response


async def test_worker_metrics_server_answers_over_a_real_socket() -> None:
    metrics = create_metrics()
    metrics.conversations_completed_total.labels(model_version_id=MODEL_VERSION_ID).inc()
    server = await start_metrics_server(metrics.registry, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            scraped = await client.get("/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain")
            completed = (
                f'conversations_completed_total{{model_version_id="{MODEL_VERSION_ID}"}} 1.0'
            )
            assert completed in scraped.text
            assert (await client.get("/")).status_code == 404
            assert (await client.get("/metrics/extra")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405

        # A malformed request costs only its own connection.
        assert await _raw_request(server.port, b"nonsense\r\n\r\n") == b""
        raw = await _raw_request(server.port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        await server.stop()

    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)
