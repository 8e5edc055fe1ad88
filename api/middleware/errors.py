"""Turns an exception no handler took into the 500 error contract, inside the request's scope.

Starlette renders such errors in its outermost middleware, outside the request-id and metrics
middleware, so that response would miss `X-Request-ID` and the metrics. Catching here, just
inside them, gives every response the same headers and accounting.
"""

from __future__ import annotations

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


class UnhandledErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise  # too late for another response; the server closes the connection
            logger.opt(exception=exc).error("unhandled_exception")
            await error_response(500, "Internal server error")(scope, receive, send)
