"""Reads that end fast and well are not traced (the default); any other request is, and a
read worth a trace is whole: its server span made with the ids its request ran under."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, HTTPException
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api.service_app import FASTAPI_TELEMETRY_OFF
from shared.detail_spans import DeferringTracer
from shared.telemetry import Telemetry, current_trace_id
from tests.support.edge_app import behind_edge, call

SLOW_MS = 20
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def _app(telemetry: Telemetry, *, trace_fast_reads: bool = False) -> FastAPI:
    tracer = DeferringTracer(telemetry.tracer_provider.get_tracer("test.db"))
    app = FastAPI(telemetry=FASTAPI_TELEMETRY_OFF)

    @app.get("/fast")
    async def fast() -> dict[str, str | None]:
        with tracer.start_as_current_span("SELECT thing", kind=SpanKind.CLIENT):
            return {"trace_id": current_trace_id()}

    @app.get("/slow")
    async def slow() -> dict[str, str | None]:
        with tracer.start_as_current_span("SELECT thing", kind=SpanKind.CLIENT):
            await asyncio.sleep(SLOW_MS / 1000 * 2)
        return {"trace_id": current_trace_id()}

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404)

    @app.get("/fails")
    async def fails() -> None:
        raise RuntimeError("read failed")

    @app.post("/submit")
    async def submit() -> None:
        return None

    return behind_edge(app, telemetry, detail_min_ms=SLOW_MS, trace_fast_reads=trace_fast_reads)


def _spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


async def test_a_fast_successful_read_is_not_traced_but_its_lines_carry_ids(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    response = await call(_app(telemetry), "GET", "/fast")
    assert response.status_code == 200
    assert _spans(exporter) == []
    trace_id = response.json()["trace_id"]
    assert trace_id is not None
    assert len(trace_id) == 32
    assert int(trace_id, 16) != 0


async def test_a_slow_read_is_traced_whole_under_the_ids_it_ran_with(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    response = await call(_app(telemetry), "GET", "/slow")
    statement, server = _spans(exporter)
    assert (statement.name, server.name) == ("SELECT thing", "GET /slow")
    assert server.kind is SpanKind.SERVER
    assert server.parent is None
    # Its log lines named this trace while it ran; its statement is the server span's child.
    assert format(server.context.trace_id, "032x") == response.json()["trace_id"]
    assert statement.parent is not None
    assert statement.parent.span_id == server.context.span_id
    assert statement.context.trace_id == server.context.trace_id
    assert server.start_time is not None
    assert server.end_time is not None
    assert statement.start_time is not None
    assert server.start_time <= statement.start_time
    assert server.end_time - server.start_time >= SLOW_MS * 2 * 1_000_000
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/slow"
    assert server.attributes["http.response.status_code"] == 200


async def test_a_failed_or_refused_read_is_traced(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    app = _app(telemetry)
    assert (await call(app, "GET", "/missing")).status_code == 404
    assert (await call(app, "GET", "/fails")).status_code == 500
    missing, failed = _spans(exporter)
    assert (missing.name, failed.name) == ("GET /missing", "GET /fails")
    assert failed.status.status_code is StatusCode.ERROR


async def test_a_submission_is_traced_however_fast(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    await call(_app(telemetry), "POST", "/submit")
    assert [span.name for span in _spans(exporter)] == ["POST /submit"]


async def test_a_callers_sampled_trace_is_continued_however_fast(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    await call(_app(telemetry), "GET", "/fast", {"traceparent": traceparent})
    (server,) = _spans(exporter)
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CALLER_SPAN


async def test_with_trace_fast_reads_every_read_is_traced(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    await call(_app(telemetry, trace_fast_reads=True), "GET", "/fast")
    assert [span.name for span in _spans(exporter)] == ["GET /fast"]
