"""Tracing: propagation through a job carrier, exporters, the redis root-span filter, helpers."""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
from pathlib import Path

import fakeredis
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api.middleware.edge import EdgeMiddleware
from api.service_app import FASTAPI_TELEMETRY_OFF
from shared.metrics import create_metrics
from shared.telemetry import (
    JsonLinesSpanExporter,
    Telemetry,
    _otlp_traces_endpoint,
    current_trace_id,
    extract_trace_context,
    inject_trace_context,
    instrument_httpx,
    instrument_redis,
    setup_telemetry,
)
from tests.support.auth import ADMIN_HEADERS
from tests.support.log_capture import make_settings


def test_resource_names_the_process(telemetry: Telemetry, exporter: InMemorySpanExporter) -> None:
    with telemetry.tracer_provider.get_tracer("test").start_as_current_span("job"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "ai-eng-api-worker"
    assert span.resource.attributes["deployment.environment"] == "DEV"
    # One replica among several: its host and process.
    assert (
        span.resource.attributes["service.instance.id"] == f"{socket.gethostname()}:{os.getpid()}"
    )
    assert span.resource.attributes["host.name"] == socket.gethostname()


def test_carrier_round_trip_makes_the_job_span_a_child_of_the_enqueuing_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /conversations", kind=SpanKind.SERVER):
        carrier = inject_trace_context()
    assert set(carrier) >= {"traceparent"}
    assert current_trace_id() is None

    # The worker side: no span is current, only the carrier from the job's kwargs.
    with tracer.start_as_current_span(
        "generate_answer", context=extract_trace_context(carrier), kind=SpanKind.CONSUMER
    ) as job:
        trace_id = current_trace_id()

    enqueue_span, job_span = exporter.get_finished_spans()
    assert job_span.context.trace_id == enqueue_span.context.trace_id
    assert job_span.parent is not None
    assert job_span.parent.span_id == enqueue_span.context.span_id
    assert job_span.parent.is_remote
    assert trace_id == format(enqueue_span.context.trace_id, "032x")
    assert len(trace_id) == 32
    assert job.get_span_context().trace_id == enqueue_span.context.trace_id


def test_missing_or_empty_carrier_starts_a_new_trace(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    assert inject_trace_context() == {}
    tracer = telemetry.tracer_provider.get_tracer("test")
    for carrier in (None, {}, {"traceparent": "garbage"}):
        with tracer.start_as_current_span("job", context=extract_trace_context(carrier)):
            pass
    assert [span.parent for span in exporter.get_finished_spans()] == [None, None, None]


def test_json_lines_exporter_writes_one_parseable_span_per_line(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    built = setup_telemetry(
        make_settings(),
        process_name="api",
        span_exporter=JsonLinesSpanExporter(path),
        set_global=False,
    )
    tracer = built.tracer_provider.get_tracer("test")
    with (
        tracer.start_as_current_span("parent", attributes={"conversation.id": "c1"}),
        pytest.raises(RuntimeError),
        tracer.start_as_current_span("child"),
    ):
        raise RuntimeError("llm down")
    built.shutdown()

    child, parent = (json.loads(line) for line in path.read_text().splitlines())
    assert (child["name"], parent["name"]) == ("child", "parent")
    assert child["trace_id"] == parent["trace_id"]
    assert len(parent["trace_id"]) == 32
    assert child["parent_span_id"] == parent["span_id"]
    assert parent["parent_span_id"] is None
    assert parent["attributes"] == {"conversation.id": "c1"}
    assert parent["kind"] == "INTERNAL"
    assert parent["service_name"] == "ai-eng-api-api"
    assert child["status"]["code"] == "ERROR"
    assert parent["status"]["code"] == "UNSET"


def test_traces_file_setting_adds_the_file_exporter(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    settings = make_settings(OTEL_TRACES_FILE=str(path))
    built = setup_telemetry(settings, process_name="worker", set_global=False)
    with built.tracer_provider.get_tracer("test").start_as_current_span("job"):
        pass
    # Written synchronously, before any shutdown, so a test can read it right away.
    assert json.loads(path.read_text())["service_name"] == "ai-eng-api-worker"
    built.shutdown()


def test_nothing_configured_means_no_exporter_and_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            built = setup_telemetry(make_settings(), process_name="api", set_global=False)
            with built.tracer_provider.get_tracer("test").start_as_current_span("work"):
                pass
            built.shutdown()
    assert built.exporters == ()
    assert [r for r in caplog.records if r.name.startswith("opentelemetry")] == []


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("http://jaeger:4318", "http://jaeger:4318/v1/traces"),
        ("http://jaeger:4318/", "http://jaeger:4318/v1/traces"),
        (
            "https://collector.example/custom/v1/traces",
            "https://collector.example/custom/v1/traces",
        ),
    ],
)
def test_otlp_endpoint_gets_the_traces_path_only_when_missing(
    configured: str, expected: str
) -> None:
    assert _otlp_traces_endpoint(configured) == expected


def test_otlp_endpoint_setting_adds_an_otlp_exporter() -> None:
    settings = make_settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    built = setup_telemetry(settings, process_name="api", set_global=False)
    (otlp,) = built.exporters
    assert isinstance(otlp, OTLPSpanExporter)
    assert otlp._endpoint == "http://127.0.0.1:9/v1/traces"
    built.shutdown()  # nothing was recorded, so nothing is sent


def test_sampler_drops_root_redis_commands_and_keeps_everything_else(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    for name in ("ZRANGEBYSCORE", "MULTI PSETEX EXEC", "redis", "0"):
        with tracer.start_as_current_span(name, kind=SpanKind.CLIENT) as dropped:
            assert not dropped.is_recording()
    # A root HTTP call is named like a command but starts with its attributes.
    with tracer.start_as_current_span(
        "GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}
    ):
        pass
    with (
        tracer.start_as_current_span("reap_stale_leases"),
        tracer.start_as_current_span("BRPOP", kind=SpanKind.CLIENT),
    ):
        pass

    kept = [(span.name, span.parent is not None) for span in exporter.get_finished_spans()]
    assert kept == [("GET", False), ("BRPOP", True), ("reap_stale_leases", False)]


async def test_instrumented_redis_traces_commands_only_under_a_parent(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    instrument_redis(telemetry.tracer_provider)
    try:
        client = fakeredis.FakeAsyncRedis()
        await client.set("idle", "poll")
        async with client.pipeline(transaction=True) as pipe:
            await pipe.incr("counter").expire("counter", 60).execute()
        tracer = telemetry.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("generate_answer"):
            await client.get("idle")
        await client.aclose()
    finally:
        RedisInstrumentor().uninstrument()

    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["GET", "generate_answer"]
    assert spans[0].parent is not None
    assert spans[0].parent.span_id == spans[1].context.span_id


def _edge_app(telemetry: Telemetry) -> FastAPI:
    app = FastAPI(telemetry=FASTAPI_TELEMETRY_OFF)

    @app.get("/conversations/{conversation_id}")
    async def read(conversation_id: str) -> dict[str, str | None]:
        return {"id": conversation_id, "trace_id": current_trace_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> str:
        return ""

    app.add_middleware(
        EdgeMiddleware,
        metrics=create_metrics(process_metrics=False),
        tracer_provider=telemetry.tracer_provider,
        detail_min_ms=0,
        trace_fast_reads=True,
    )
    return app


async def test_server_spans_use_route_templates_and_skip_probes(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    transport = httpx.ASGITransport(app=_edge_app(telemetry))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=ADMIN_HEADERS
    ) as client:
        body = (await client.get("/conversations/abc?x=1")).json()
        await client.get("/health/live")
        await client.get("/metrics")

    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /conversations/{conversation_id}"
    assert span.kind is SpanKind.SERVER
    assert body["trace_id"] == format(span.context.trace_id, "032x")
    assert span.parent is None
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/conversations/{conversation_id}"
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/conversations/abc"
    assert span.status.status_code is StatusCode.UNSET


async def test_server_span_continues_the_callers_trace_and_marks_failures(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    transport = httpx.ASGITransport(app=_edge_app(telemetry), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        traceparent = f"00-{caller_trace}-{caller_span}-01"
        response = await client.get("/boom", headers={"traceparent": traceparent})
        unmatched = await client.get("/nowhere")
    assert response.status_code == 500
    assert unmatched.status_code == 404

    failed, not_found = exporter.get_finished_spans()
    assert format(failed.context.trace_id, "032x") == caller_trace
    assert failed.parent is not None
    assert format(failed.parent.span_id, "016x") == caller_span
    assert failed.name == "GET /boom"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "RuntimeError"
    # No route matched: the method alone names it, never the raw path.
    assert not_found.name == "GET"
    assert not_found.attributes is not None
    assert "http.route" not in not_found.attributes
    assert not_found.attributes["http.response.status_code"] == 404
    assert not_found.status.status_code is StatusCode.UNSET


async def test_httpx_client_spans_carry_traceparent(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    seen: list[str | None] = []

    def llm(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(503)

    client = httpx.AsyncClient(transport=httpx.MockTransport(llm))
    instrument_httpx(client, telemetry.tracer_provider)
    with telemetry.tracer_provider.get_tracer("test").start_as_current_span("generate_answer"):
        await client.post("http://llm/api/chat", json={})
    await client.aclose()

    http_span, job_span = exporter.get_finished_spans()
    assert http_span.kind is SpanKind.CLIENT
    assert http_span.parent is not None
    assert http_span.parent.span_id == job_span.context.span_id
    assert http_span.status.status_code is StatusCode.ERROR
    assert seen[0] is not None
    assert format(http_span.context.trace_id, "032x") in seen[0]
