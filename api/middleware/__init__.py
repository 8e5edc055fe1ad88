"""Pure ASGI middleware of the API: request ids with access logs, and HTTP metrics."""

from api.middleware.metrics import MetricsMiddleware, route_template
from api.middleware.request_id import REQUEST_ID_HEADER, RequestIdMiddleware

__all__ = ["REQUEST_ID_HEADER", "MetricsMiddleware", "RequestIdMiddleware", "route_template"]
