"""HTTP request metrics, labelled by route template so cardinality stays bounded."""

from __future__ import annotations

from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import Metrics

UNMATCHED_ROUTE = "unmatched"

# Anything else a client sends would become a label value of its own.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request, e.g. `/conversations/{id}`.

    Starlette's router records the matched route in the scope; a request that matched none (a
    404, a slash redirect) has no template and is counted as `unmatched`, never by raw path.
    """
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class MetricsMiddleware:
    """Counts requests by method, route template and status, and times them."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # What the client gets when the app raises before answering.
        status = 500
        started = perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            route = route_template(scope)
            self.metrics.http_requests_total.labels(
                method=method, route=route, status=str(status)
            ).inc()
            self.metrics.http_request_duration_seconds.labels(method=method, route=route).observe(
                perf_counter() - started
            )
