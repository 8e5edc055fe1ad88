"""The server span of a request: one per request but the probes' and the scrape's, named
after the route template (`GET /conversations/{conversation_id}`), continuing the caller's
`traceparent`, with the attributes of OpenTelemetry's HTTP server conventions.

Made by the edge layer rather than a generic ASGI instrumentation: it knows the route from the
scope once the router (or the hot-route dispatch) has picked one, so nothing is matched twice,
and it reads the request's headers once, without building a headers object.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from starlette.types import Scope

from api.middleware.metrics import KNOWN_METHODS, UNMATCHED_ROUTE
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


class ServerSpan:
    """Started when the request arrives (and made current), ended when its answer has gone."""

    __slots__ = ("_method", "_span", "_token")

    def __init__(self, tracer: trace.Tracer, scope: Scope) -> None:
        method: str = scope["method"]
        self._method = method if method in KNOWN_METHODS else "HTTP"
        attributes: dict[str, Any] = {
            "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
            "url.scheme": scope.get("scheme", "http"),
            "url.path": scope["path"],
        }
        if scope.get("http_version"):
            attributes["network.protocol.version"] = scope["http_version"]
        if scope.get("server"):
            attributes["server.address"], attributes["server.port"] = scope["server"]
        parent = _parent(scope)
        self._span: Span = tracer.start_span(
            self._method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span, parent))

    def end(self, route: str, status: int, error: BaseException | None) -> None:
        """Name it after the route, record the status, leave the request's context."""
        span = self._span
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
