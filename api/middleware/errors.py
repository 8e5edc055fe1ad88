"""Turns an exception no handler took into the 500 error contract, inside the request's scope.

Starlette would render such errors in its own error middleware, as a plain-text 500. Catching
here, inside the edge layer, answers in the error contract, and the edge layer still adds
`X-Request-ID` and the security headers, counts it and logs it.
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
