"""Request ids: accepted from the caller or made here, bound to every log line, echoed back.

Also writes the one access line per request (`http_request`), so uvicorn's own access log can
be turned off: this one carries the request and trace ids.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from time import perf_counter

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logs import bind_context

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")

# The id ends up in logs and response headers; anything else is a possible injection vector.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

# nginx's code for a client that went away before the answer.
_CLIENT_CLOSED_REQUEST = 499


def _incoming_request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == _HEADER_KEY:
            candidate = value.decode("latin-1")
            return candidate if _SANE_REQUEST_ID.fullmatch(candidate) else None
    return None


class RequestIdMiddleware:
    """Binds `request_id` for the whole request and sets the `X-Request-ID` response header.

    The id is also put in `request.state.request_id` for handlers that need to return it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status: int | None = None
        started = perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (key, value)
                    for key, value in message.get("headers", ())
                    if key.lower() != _HEADER_KEY
                ]
                headers.append((_HEADER_KEY, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        with bind_context(request_id=request_id):
            error: BaseException | None = None
            try:
                await self.app(scope, receive, send_with_request_id)
            except BaseException as exc:
                error = exc
                raise
            finally:
                if status is None:
                    cancelled = isinstance(error, asyncio.CancelledError)
                    status = _CLIENT_CLOSED_REQUEST if cancelled else 500
                failed = error is not None and not isinstance(error, asyncio.CancelledError)
                # The traceback is logged here, where the request id is still bound; the
                # server's own report of the same exception has none.
                (logger.opt(exception=error) if failed else logger).log(
                    "ERROR" if failed or status >= 500 else "INFO",
                    "http_request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((perf_counter() - started) * 1000, 2),
                )
