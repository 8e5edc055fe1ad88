"""The application class: FastAPI, with room for layers outside FastAPI's own.

FastAPI puts three layers of its own around every request before the app's middleware: its
error page, its exception telemetry and its body-limit check. This app's edge layer (ids,
headers, span, metrics, access line) and the hot-route dispatch go outside them: the edge
because it must see the request first and the answer last anyway, the hot routes because
they handle their own errors and limits, so those layers would only add frames to the two
requests clients make most. Everything else passes through FastAPI's layers as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

Layer = Callable[[ASGIApp], ASGIApp]


class ServiceApp(FastAPI):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
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
