"""The first layer every HTTP request passes and the last its answer passes.

One layer, one wrapped `send`, for what each request needs once: its id (bound to every log
line, echoed in `X-Request-ID`), the security headers, the server span, the request metrics
and the one access line (`http_request`, with the request and trace ids, so uvicorn's access
log stays off). A layer per concern would each wrap `send` and add a frame to every call, a
cost the cheapest requests feel most.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

from opentelemetry.trace import TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.middleware.metrics import RequestMetrics, route_template
from api.middleware.request_id import REQUEST_ID_KEY, request_id_for
from api.middleware.security_headers import with_edge_headers
from api.middleware.server_span import ServerSpan, traced
from shared.detail_spans import note_details, stop_noting
from shared.logs import bind_context, log_line
from shared.metrics import Metrics

# The methods whose fast, successful requests go untraced unless `TRACE_FAST_READS`: they
# start nothing another trace would continue (a submission's trace goes on into its job).
_READS = frozenset({"GET", "HEAD"})
# nginx's code for a client that went away before the answer.
CLIENT_CLOSED_REQUEST = 499
_LOGGER = __name__


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        tracer_provider: TracerProvider,
        detail_min_ms: int,
        trace_fast_reads: bool,
    ) -> None:
        self.app = app
        self.metrics = RequestMetrics(metrics)
        self.tracer = tracer_provider.get_tracer("ai_eng_api.http")
        # A request's client spans are exported when it failed or took this long (0: always).
        self.detail_min_seconds = detail_min_ms / 1000
        # Reads (polls, mostly) that end fast and well are not traced at all, unless this.
        self.deferred_methods = frozenset() if trace_fast_reads else _READS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        request_id_header = (REQUEST_ID_KEY, request_id.encode("latin-1"))
        status: int | None = None
        started = perf_counter()

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = with_edge_headers(message.get("headers", ()), request_id_header)
                message = {**message, "headers": headers}
            await send(message)

        span = (
            ServerSpan(self.tracer, scope, deferred=scope["method"] in self.deferred_methods)
            if traced(scope)
            else None
        )
        details, noting = note_details() if span is not None else (None, None)
        with bind_context(request_id=request_id):
            error: BaseException | None = None
            try:
                await self.app(scope, receive, edge_send)
            except BaseException as exc:
                error = exc
                raise
            finally:
                cancelled = isinstance(error, asyncio.CancelledError)
                if status is None:
                    status = CLIENT_CLOSED_REQUEST if cancelled else 500
                seconds = perf_counter() - started
                route = route_template(scope)
                self.metrics.record(scope["method"], route, status, seconds)
                self._access_line(scope, status, seconds, None if cancelled else error)
                slow = seconds >= self.detail_min_seconds
                if details is not None and noting is not None:
                    failed = status >= 500 or (error is not None and not cancelled)
                    details.decide(keep=failed or slow)
                    stop_noting(noting)
                if span is not None:
                    span.end(route, status, error, keep=slow or status >= 400 or error is not None)

    @staticmethod
    def _access_line(
        scope: Scope, status: int, seconds: float, error: BaseException | None
    ) -> None:
        fields = {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        # A traceback is logged here, where the request id is still bound; the server's own
        # report of the same exception has none.
        log_line(
            "ERROR" if error is not None or status >= 500 else "INFO",
            "http_request",
            logger_name=_LOGGER,
            exception=error,
            **fields,
        )
