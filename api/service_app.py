"""The application class: FastAPI, with room for layers outside FastAPI's own.

FastAPI puts three layers of its own around every request before the app's middleware: its
error page, its exception telemetry and its body-limit check. This app's edge layer (ids,
headers, span, metrics, access line) and the hot-route dispatch go outside them: the edge
because it must see the request first and the answer last anyway, the hot routes because
they handle their own errors and limits, so those layers would only add frames to the two
requests clients make most. Everything else passes through FastAPI's layers as before.
FastAPI's own tracing is off: the edge layer makes the server span.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp

Layer = Callable[[ASGIApp], ASGIApp]

# FastAPI's own instrumentation, off: the edge layer makes the server span, in the layer that
# already times and logs the request (FastAPI's would add a layer and walk the middleware
# stack on every request).
FASTAPI_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


class ServiceApp(FastAPI):
    def __init__(self, **options: Any) -> None:
        super().__init__(telemetry=FASTAPI_TELEMETRY_OFF, **options)
        self.outer_layers: list[Layer] = []

    def add_outer_layer(self, layer: Layer) -> None:
        """Wrap the whole stack in `layer`; the last added is the outermost."""
        if self.middleware_stack is not None:
            raise RuntimeError("Cannot add a layer after the application has started")
        self.outer_layers.append(layer)

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for layer in self.outer_layers:
            app = layer(app)
        return app
