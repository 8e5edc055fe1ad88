"""Request size limits: 431 for oversized headers, 413 for an oversized body.

Checked before routing, authentication or parsing, so an oversized request costs the server
no more than its limit:

* headers whose total size (names and values, in bytes) exceeds `MAX_HEADER_BYTES`: 431;
* a `Content-Length` over `MAX_REQUEST_BODY_BYTES`: 413 before any of the body is read;
* a body without a length (chunked) is counted as it arrives: once it passes the limit the
  app's read fails, nothing more is read, and the answer is 413 whatever the app made of it.

Both answers are in the error contract with code `bad_request`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from shared.errors import ErrorCode

_CONTENT_LENGTH = b"content-length"


class _BodyTooLargeError(Exception):
    """Raised into the app by `receive` when the body passes the limit."""


def header_bytes(scope: Scope) -> int:
    """The size of the request's headers: names and values, in bytes."""
    return sum(len(name) + len(value) for name, value in scope["headers"])


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == _CONTENT_LENGTH:
            try:
                return int(value)
            except ValueError:
                return None  # a malformed length is the HTTP server's to refuse
    return None


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if header_bytes(scope) > self.max_header_bytes:
            response = error_response(
                431,
                "Request headers too large",
                details={"max_bytes": self.max_header_bytes},
                code=ErrorCode.BAD_REQUEST,
            )
            await response(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        await self._counting_body(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "Request body too large",
            details={"max_bytes": self.max_body_bytes},
            code=ErrorCode.BAD_REQUEST,
            # The rest of the body is never read; the connection cannot carry another request.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    async def _counting_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLargeError
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to its failed read; the 413 below replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # The app may let the failed read escape as it is or as another error.
            if not exceeded:
                raise
        if exceeded and not started:
            await self._too_large(scope, receive, send)
