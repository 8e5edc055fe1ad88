"""OpenTelemetry tracing: provider factory, instrumentation helpers, propagation through the queue.

Nothing is exported unless configured: `OTEL_EXPORTER_OTLP_ENDPOINT` sends spans to a collector,
`OTEL_TRACES_FILE` appends them as JSON lines (how end-to-end tests read the spans of separate
processes), and tests may pass their own exporter.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from httpx import AsyncClient
from loguru import logger
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.detail_spans import DeferringTracerProvider, PresetIds
from shared.logs import instance_id
from shared.settings import Settings

# W3C trace context only: the carrier rides in arq job kwargs and must stay small and stable.
_PROPAGATOR = TraceContextTextMapPropagator()

# The redis instrumentation names a span after the command ("BRPOP", "MULTI ZADD EXEC", "redis"
# for an empty pipeline, the db number for an empty command).
_REDIS_SPAN_NAME = re.compile(r"[A-Z][A-Z0-9_.]*(?: [A-Z][A-Z0-9_.]*)*|redis(?:\.\w+)?|\d+")


class DropRootRedisSampler(Sampler):
    """`ParentBased(ALWAYS_ON)`, except that redis commands without a parent span are dropped.

    The worker polls Redis several times a second while idle (arq's queue scan, health key,
    abort checks); each poll would otherwise be a trace of its own. A redis command inside a
    request or a job has a parent and is kept. A redis span is recognised by being a CLIENT span
    named like a command that carries no attributes when it starts: the redis instrumentation
    sets its attributes afterwards, whereas httpx (whose spans are also named "GET"/"POST")
    passes them at start, so a root HTTP call is never mistaken for a redis command.
    """

    def __init__(self, delegate: Sampler | None = None) -> None:
        self._delegate = delegate if delegate is not None else ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Drop root redis command spans; defer every other decision to the delegate."""
        if (
            kind is SpanKind.CLIENT
            and not attributes
            and _REDIS_SPAN_NAME.fullmatch(name)
            and not trace.get_current_span(parent_context).get_span_context().is_valid
        ):
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """Sampler name as reported by the SDK."""
        return f"DropRootRedisSampler{{{self._delegate.get_description()}}}"


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to `path` as one JSON object per line.

    Several processes may share the file: each line goes out in a single `write` on a file
    opened with O_APPEND, so lines from the API and the worker never interleave.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans; a failed write is reported, never raised into the caller."""
        lines = [json.dumps(_span_to_dict(span), default=str) + "\n" for span in spans]
        try:
            with self._lock:
                fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    for line in lines:
                        os.write(fd, line.encode())
                finally:
                    os.close(fd)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the file is opened per export."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every export is already on disk."""
        return True


def _span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": format(context.trace_id, "032x") if context else None,
        "span_id": format(context.span_id, "016x") if context else None,
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service_name": span.resource.attributes.get("service.name"),
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "attributes": dict(span.attributes or {}),
        "status": {"code": span.status.status_code.name, "description": span.status.description},
    }


@dataclass(frozen=True)
class Telemetry:
    """The process's tracer provider and the exporters it writes to."""

    tracer_provider: TracerProvider
    exporters: tuple[SpanExporter, ...]

    def shutdown(self) -> None:
        """Flush pending spans and stop the exporters; call once on process shutdown."""
        self.tracer_provider.shutdown()


def _otlp_traces_endpoint(endpoint: str) -> str:
    # The exporter uses an explicit endpoint as is, while the usual setting is the collector's
    # base URL (http://jaeger:4318); add the signal path only when none is given.
    if urlsplit(endpoint).path in {"", "/"}:
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def setup_telemetry(
    settings: Settings,
    *,
    process_name: str,
    span_exporter: SpanExporter | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Build the tracer provider of one process (`api` or `worker`).

    `set_global` makes it the OpenTelemetry global, which can happen once per process; tests pass
    `set_global=False` and use the returned provider explicitly.
    """
    resource = Resource.create(
        {
            "service.name": f"{settings.SERVICE_NAME}-{process_name}",
            "service.namespace": settings.SERVICE_NAME,
            "deployment.environment": settings.ENVIRONMENT.value,
            # Which replica: traces of several API or worker processes told apart.
            "service.instance.id": instance_id(),
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=DropRootRedisSampler(), id_generator=PresetIds()
    )
    exporters: list[SpanExporter] = []
    if settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        otlp = OTLPSpanExporter(
            endpoint=_otlp_traces_endpoint(settings.OTEL_EXPORTER_OTLP_ENDPOINT)
        )
        provider.add_span_processor(BatchSpanProcessor(otlp))
        exporters.append(otlp)
    if settings.OTEL_TRACES_FILE:
        # Synchronous on purpose: a test reading the file right after a request must see its
        # spans, and a killed process must not take a pending batch with it.
        file_exporter = JsonLinesSpanExporter(settings.OTEL_TRACES_FILE)
        provider.add_span_processor(SimpleSpanProcessor(file_exporter))
        exporters.append(file_exporter)
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        exporters.append(span_exporter)
    if set_global:
        trace.set_tracer_provider(provider)
    logger.info(
        "telemetry_configured",
        service_name=resource.attributes.get("service.name"),
        exporters=[type(exporter).__name__ for exporter in exporters],
    )
    return Telemetry(tracer_provider=provider, exporters=tuple(exporters))


def instrument_sqlalchemy(engine: AsyncEngine, tracer_provider: TracerProvider) -> None:
    """A span per statement on `engine`.

    The instrumentor is a process-wide singleton; instrumenting a new engine (a test building
    a second app) first releases the previous one, which would otherwise be kept silently.
    """
    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(
        engine=engine.sync_engine, tracer_provider=DeferringTracerProvider(tracer_provider)
    )


def instrument_httpx(client: AsyncClient, tracer_provider: TracerProvider) -> None:
    """Spans and outgoing `traceparent` headers for this client only (the LLM client)."""
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider)


def instrument_redis(tracer_provider: TracerProvider) -> None:
    """Spans for every redis client, arq's included; idle polling is dropped by the sampler.

    Process-wide like the SQLAlchemy one: a second call moves the instrumentation to the new
    provider instead of leaving it on one that may be shut down.
    """
    instrumentor = RedisInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=DeferringTracerProvider(tracer_provider))


def inject_trace_context() -> dict[str, str]:
    """The current trace context as a W3C carrier (`traceparent`, `tracestate`) for a job."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def extract_trace_context(carrier: dict[str, str] | None) -> Context:
    """A context whose parent is the span that enqueued the job; empty when there was none."""
    return _PROPAGATOR.extract(carrier or {})


def current_trace_id() -> str | None:
    """The 32-hex trace id of the current span, or None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None
