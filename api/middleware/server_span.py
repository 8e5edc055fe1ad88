"""The server span of a request: one per request but the probes' and the scrape's, named
after the route template (`GET /conversations/{conversation_id}`), continuing the caller's
`traceparent`, with the attributes of OpenTelemetry's HTTP server conventions.

Made by the edge layer rather than a generic ASGI instrumentation: it knows the route from the
scope once the router (or the hot-route dispatch) has picked one, so nothing is matched twice,
and it reads the request's headers once, without building a headers object.

A deferred one (a read, unless `TRACE_FAST_READS`) is only noted while the request runs: its
ids are handed out at once (the request's log lines and client spans carry them) and the span
is made, with those ids and its real start time, only if the request turns out to be worth a
trace. A caller's sampled `traceparent` is always continued at once.
"""

from __future__ import annotations

import random
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
)
from starlette.types import Scope

from api.middleware.metrics import KNOWN_METHODS, UNMATCHED_ROUTE
from shared.detail_spans import preset_ids
from shared.telemetry import extract_trace_context

_TRACE_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate"}


def traced(scope: Scope) -> bool:
    """Probes and scrapes would be most of the traces and say nothing: not traced."""
    path: str = scope["path"]
    return not (path.startswith("/health/") or path == "/metrics")


def _parent(scope: Scope) -> Context | None:
    carrier: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = _TRACE_HEADERS.get(key.lower())
        if name is not None and name not in carrier:
            carrier[name] = value.decode("latin-1")
    return extract_trace_context(carrier) if carrier else None


def _start_attributes(scope: Scope) -> dict[str, Any]:
    method: str = scope["method"]
    attributes: dict[str, Any] = {
        "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
        "url.scheme": scope.get("scheme", "http"),
        "url.path": scope["path"],
    }
    if scope.get("http_version"):
        attributes["network.protocol.version"] = scope["http_version"]
    if scope.get("server"):
        attributes["server.address"], attributes["server.port"] = scope["server"]
    return attributes


def _noted_ids(remote: SpanContext) -> tuple[SpanContext, tuple[int, int]]:
    """Ids for a span not made yet: the caller's trace (and its sampling flag), or a new one."""
    trace_id = remote.trace_id if remote.is_valid else random.getrandbits(128) or 1
    span_id = random.getrandbits(64) or 1
    flags = remote.trace_flags if remote.is_valid else TraceFlags(TraceFlags.SAMPLED)
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags), (trace_id, span_id)


class ServerSpan:
    """Started when the request arrives (and made current), ended when its answer has gone."""

    __slots__ = ("_ids", "_method", "_parent", "_scope", "_span", "_start", "_token", "_tracer")

    def __init__(self, tracer: trace.Tracer, scope: Scope, *, deferred: bool = False) -> None:
        method: str = scope["method"]
        self._method = method if method in KNOWN_METHODS else "HTTP"
        self._tracer = tracer
        self._scope = scope
        parent = _parent(scope)
        self._parent = parent
        remote = trace.get_current_span(parent).get_span_context()
        self._ids: tuple[int, int] | None = None
        self._start = 0
        if deferred and not (remote.is_valid and remote.trace_flags.sampled):
            noted, self._ids = _noted_ids(remote)
            self._start = time_ns()
            self._span: Span = NonRecordingSpan(noted)
        else:
            self._span = tracer.start_span(
                self._method,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=_start_attributes(scope),
            )
        self._token = otel_context.attach(trace.set_span_in_context(self._span, parent))

    def end(
        self, route: str, status: int, error: BaseException | None, *, keep: bool = True
    ) -> None:
        """Name it after the route, record the status, leave the request's context. A
        deferred span is made now if `keep`, and dropped otherwise."""
        span = self._span
        if self._ids is not None:
            if not keep:
                otel_context.detach(self._token)
                return
            with preset_ids(*self._ids):
                span = self._tracer.start_span(
                    self._method,
                    # Not the current context: the stand-in is current, and no parent.
                    context=self._parent if self._parent is not None else Context(),
                    kind=SpanKind.SERVER,
                    attributes=_start_attributes(self._scope),
                    start_time=self._start,
                )
        attributes: dict[str, Any] = {"http.response.status_code": status}
        if route != UNMATCHED_ROUTE:
            attributes["http.route"] = route
            span.update_name(f"{self._method} {route}")
        if error is not None or status >= 500:
            attributes["error.type"] = type(error).__qualname__ if error else str(status)
            span.set_status(StatusCode.ERROR)
        span.set_attributes(attributes)
        span.end()
        otel_context.detach(self._token)
