"""HTTP request metrics, labelled by route template so cardinality stays bounded."""

from __future__ import annotations

from prometheus_client.metrics import Counter, Histogram
from starlette.types import Scope

from shared.metrics import Metrics

UNMATCHED_ROUTE = "unmatched"

# Anything else a client sends would become a label value of its own.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request, e.g. `/conversations/{id}`.

    Starlette's router records the matched route in the scope; a request that matched none (a
    404, a slash redirect) has no template and is counted as `unmatched`, never by raw path.
    """
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestMetrics:
    """Counts requests by method, route template and status, and times them.

    The labelled children are kept here: the set of (method, route, status) is bounded, and
    finding a child through `labels()` (validation, a lock) costs more than the update.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._timers: dict[tuple[str, str], Histogram] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = "OTHER"
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._metrics.http_requests_total.labels(
                method=method, route=route, status=str(status)
            )
            self._counters[(method, route, status)] = counter
        counter.inc()
        timer = self._timers.get((method, route))
        if timer is None:
            timer = self._metrics.http_request_duration_seconds.labels(method=method, route=route)
            self._timers[(method, route)] = timer
        timer.observe(seconds)
