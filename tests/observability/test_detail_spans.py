"""The edge layer's decision on a request's client spans: kept when it failed or was slow,
dropped when it was fast, and made with the times, status and parent they were noted with."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api.service_app import FASTAPI_TELEMETRY_OFF
from shared.detail_spans import MAX_NOTED, DeferringTracer
from shared.telemetry import Telemetry, current_trace_id
from tests.support.edge_app import behind_edge, call

SLOW_MS = 20
NEVER_SLOW_MS = 600_000


def _app(telemetry: Telemetry, detail_min_ms: int, later: list[asyncio.Task[None]]) -> FastAPI:
    tracer = DeferringTracer(telemetry.tracer_provider.get_tracer("test.db"))
    app = FastAPI(telemetry=FASTAPI_TELEMETRY_OFF)

    def statement() -> trace.Span:
        return tracer.start_span("SELECT thing", kind=SpanKind.CLIENT, attributes={"n": 1})

    @app.get("/fast")
    async def fast() -> dict[str, str | None]:
        with tracer.start_as_current_span("SELECT thing", kind=SpanKind.CLIENT):
            # A line logged inside a noted span carries the request's ids.
            return {"trace_id": current_trace_id()}

    @app.get("/slow")
    async def slow() -> None:
        with tracer.start_as_current_span("SELECT thing", kind=SpanKind.CLIENT):
            await asyncio.sleep(SLOW_MS / 1000 * 2)

    @app.get("/fails")
    async def fails() -> None:
        with tracer.start_as_current_span("SELECT thing", kind=SpanKind.CLIENT):
            raise RuntimeError("statement failed")

    @app.get("/many")
    async def many() -> None:
        for _ in range(MAX_NOTED + 10):
            statement().end()
        raise RuntimeError("kept")

    @app.get("/outlives")
    async def outlives() -> None:
        span = statement()

        async def finish() -> None:
            span.end()

        later.append(asyncio.create_task(finish()))

    return behind_edge(app, telemetry, detail_min_ms=detail_min_ms, trace_fast_reads=True)


async def _get(app: FastAPI, path: str) -> httpx.Response:
    return await call(app, "GET", path)


def _names(exporter: InMemorySpanExporter) -> list[str]:
    return [span.name for span in exporter.get_finished_spans()]


async def test_a_fast_request_keeps_its_server_span_only(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    response = await _get(_app(telemetry, SLOW_MS, []), "/fast")
    assert _names(exporter) == ["GET /fast"]
    (server,) = exporter.get_finished_spans()
    assert response.json()["trace_id"] == format(server.context.trace_id, "032x")


async def test_a_slow_request_keeps_its_client_spans(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    await _get(_app(telemetry, SLOW_MS, []), "/slow")
    statement, server = exporter.get_finished_spans()
    assert (statement.name, server.name) == ("SELECT thing", "GET /slow")
    assert statement.kind is SpanKind.CLIENT
    assert statement.parent is not None
    assert statement.parent.span_id == server.context.span_id
    assert statement.context.trace_id == server.context.trace_id
    assert statement.start_time is not None
    assert statement.end_time is not None
    assert statement.end_time - statement.start_time >= SLOW_MS * 2 * 1_000_000
    assert server.start_time is not None
    assert server.end_time is not None
    assert server.start_time <= statement.start_time <= statement.end_time <= server.end_time


async def test_a_failed_request_keeps_its_client_spans_with_their_errors(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    response = await _get(_app(telemetry, NEVER_SLOW_MS, []), "/fails")
    assert response.status_code == 500
    statement, server = exporter.get_finished_spans()
    assert statement.name == "SELECT thing"
    assert statement.status.status_code is StatusCode.ERROR
    assert [event.name for event in statement.events] == ["exception"]
    assert server.status.status_code is StatusCode.ERROR


async def test_no_threshold_keeps_every_client_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    await _get(_app(telemetry, 0, []), "/fast")
    assert _names(exporter) == ["SELECT thing", "GET /fast"]


async def test_a_span_ending_after_its_request_follows_the_decision(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    later: list[asyncio.Task[None]] = []
    await _get(_app(telemetry, 0, later), "/outlives")
    await asyncio.gather(*later)
    assert sorted(_names(exporter)) == ["GET /outlives", "SELECT thing"]
    exporter.clear()
    await _get(_app(telemetry, NEVER_SLOW_MS, later), "/outlives")
    await asyncio.gather(*later)
    assert _names(exporter) == ["GET /outlives"]


def test_outside_a_request_spans_are_made_at_once(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    tracer = DeferringTracer(telemetry.tracer_provider.get_tracer("test.db"))
    with (
        tracer.start_as_current_span("job"),
        tracer.start_as_current_span("UPDATE thing", kind=SpanKind.CLIENT) as span,
    ):
        assert span.get_span_context().span_id != 0
    assert _names(exporter) == ["UPDATE thing", "job"]


async def test_a_long_request_keeps_a_bounded_number_of_client_spans(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    await _get(_app(telemetry, 0, []), "/many")
    assert _names(exporter).count("SELECT thing") == MAX_NOTED
