"""The two routes clients call most, dispatched without the router's search and dependency
solving: `POST /conversations` and `GET /conversations/{conversation_id}`.

They run the same route functions with the same dependencies (called here by hand, in the
order FastAPI would), the same exception handlers, and they leave the route in the scope as
the router does, so the span, the metrics and the access line name it the same. This layer
sits right inside the edge layer, so it also applies the size limits itself (by handing an
oversized request on). Only the plain case is taken here: a canonical UUID in the path and no
query string for the GET; a JSON body that is valid as it stands, no `Prefer` and a
well-formed `Idempotency-Key` (if any) for the POST; headers and body within the limits.
Anything else (a malformed id or body, a long-poll, an overridden dependency) goes on to the
rest of the stack as it came, its body replayed, so it is answered exactly as before, errors
included.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import _bearer, authenticate, user_key_hash
from api.deps import get_engine, get_settings, get_submissions
from api.middleware.request_limits import declared_length, header_bytes
from api.routes import conversations
from shared.schemas.conversations import ConversationCreate

_PREFIX = "/conversations"
_ITEM = "/conversations/{conversation_id}"
# The canonical spelling only; any other is left to FastAPI's own parsing and errors.
_CANONICAL_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# What the route's `Idempotency-Key` header declares (1-255 printable ASCII characters).
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_JSON = "application/json"
_CONTENT_TYPE = b"content-type"
_IDEMPOTENCY_HEADER = b"idempotency-key"
_PREFER = b"prefer"

# Where the validated body waits for the endpoint, in the request's scope.
_SUBMISSION = "api.hot_routes.submission"

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Submission:
    data: ConversationCreate
    idempotency_key: str | None


def _route(path: str, method: str) -> APIRoute:
    for route in conversations.router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no {method} {path} route")


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a header, as Starlette's `Headers.get` reads it."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """`receive` that first hands out what was already read."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class HotRoutesMiddleware:
    """Serves the plain cases of the two hot routes; passes everything else on."""

    def __init__(
        self, app: ASGIApp, *, fastapi_app: FastAPI, max_body_bytes: int, max_header_bytes: int
    ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.create_route = _route(_PREFIX, "POST")
        self.read_route = _route(_ITEM, "GET")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and not self.fastapi_app.dependency_overrides
            and not scope.get("root_path")
        ):
            method, path = scope["method"], scope["path"]
            if method == "GET" and path.startswith(_PREFIX + "/") and not scope["query_string"]:
                conversation_id = path[len(_PREFIX) + 1 :]
                if _CANONICAL_ID.fullmatch(conversation_id) and self._headers_fit(scope):
                    self._select(scope, self.read_route, {"conversation_id": conversation_id})
                    await self._answer(_read_endpoint, scope, receive, send)
                    return
            elif method == "POST" and path == _PREFIX and self._headers_fit(scope):
                await self._create(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _headers_fit(self, scope: Scope) -> bool:
        return header_bytes(scope) <= self.max_header_bytes

    async def _answer(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint's response, or the app's handler's for what it raised (the one for
        `Exception` included: logged, and the 500 of the error contract)."""
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._handler(exc)(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler:
        """The app's handler for this exception, by its class's method resolution order (as
        Starlette's exception middleware finds it)."""
        handlers = self.fastapi_app.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return cast(Handler, handlers[cls])  # the app's are all async
        raise LookupError("no handler for Exception")  # the app registers one

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = _header(scope, _CONTENT_TYPE)
        key = _header(scope, _IDEMPOTENCY_HEADER)
        idempotency_key = None if key is None else key.decode("latin-1")
        declared = declared_length(scope)
        if (
            content_type is None
            or content_type.decode("latin-1").lower() != _JSON
            or (declared is not None and declared > self.max_body_bytes)
            or _header(scope, _PREFER) is not None
            or (idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key))
        ):
            await self.app(scope, receive, send)
            return
        messages, body = await self._read_body(receive)
        data = None if body is None else self._valid_body(body)
        if data is None:
            await self.app(scope, _replaying(messages, receive), send)
            return
        scope[_SUBMISSION] = _Submission(data, idempotency_key)
        self._select(scope, self.create_route, {})
        await self._answer(_create_endpoint, scope, _replaying(messages, receive), send)

    async def _read_body(self, receive: Receive) -> tuple[list[Message], bytes | None]:
        """The messages read, and the body: None if the client went away meanwhile or the
        body passed the limit (the rest of the stack answers that, reading on)."""
        messages: list[Message] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return messages, None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return messages, b"".join(chunks)

    @staticmethod
    def _valid_body(body: bytes) -> ConversationCreate | None:
        """The body as the route validates it, or None for FastAPI to answer."""
        try:
            return ConversationCreate.model_validate(json.loads(body))
        except (ValueError, ValidationError):
            return None

    @staticmethod
    def _select(scope: Scope, route: APIRoute, path_params: dict[str, str]) -> None:
        """What the router records of the route it matched, in the scope (the span, the
        metrics and the access line name the request by it)."""
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = path_params


async def _read_endpoint(request: Request) -> Response:
    """`get_conversation` with its dependencies, in the order FastAPI solves them; with a
    user's key, its lookup and the read are one statement."""
    credentials = await _bearer(request)
    conversation_id = uuid.UUID(request.path_params["conversation_id"])
    engine = await get_engine(request)
    key_hash = user_key_hash(await get_settings(request), credentials)
    if key_hash is not None:
        return await conversations.poll_with_user_key(conversation_id, engine, key_hash, request)
    caller = await authenticate(request, credentials)
    return await conversations.get_conversation(
        conversation_id=conversation_id, engine=engine, caller=caller, request=request, wait=0
    )


async def _create_endpoint(request: Request) -> Response:
    """`create_conversation` with its dependencies, the body already validated."""
    submission: _Submission = request.scope.pop(_SUBMISSION)
    caller = await authenticate(request, await _bearer(request))
    return await conversations.create_conversation(
        data=submission.data,
        caller=caller,
        submissions=await get_submissions(request),
        request=request,
        idempotency_key=submission.idempotency_key,
        prefer=None,
    )
