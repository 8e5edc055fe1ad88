"""HTTP method semantics the router does not give: OPTIONS, HEAD and a complete `Allow`.

FastAPI makes one route per method, so `/users` is a GET route and a POST route. Starlette
answers a wrong method from the first route whose path matched, so a 405 said `Allow: GET`
where POST works too, OPTIONS was a 405, and HEAD was a 405 on every FastAPI GET route. Here
the methods of a path are the union over every route matching it:

* `OPTIONS <path>` answers 204 with `Allow`, for any path a route serves;
* `HEAD <path>` runs the GET route and sends its status and headers without the body;
* a 405 carries `Allow` listing every method of the path.

A path no route serves is left to the router (404). Nothing is added to the routes, so the
OpenAPI document shows no HEAD or OPTIONS operations.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.routing import RouteContext, iter_route_contexts
from starlette._utils import get_route_path  # the path as the router matches it
from starlette.responses import Response
from starlette.routing import BaseRoute, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The order `Allow` lists methods in; any other method a route declares goes last.
_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_ALLOW = b"allow"


def _matching(routes: Sequence[BaseRoute], scope: Scope) -> list[RouteContext]:
    """The HTTP routes whose path template matches the request's path, any method.

    FastAPI nests included routers; `iter_route_contexts` lists their routes with the full
    path (the prefix applied), as the OpenAPI document is built from them.
    """
    path = get_route_path(scope)
    matching = []
    for route in iter_route_contexts(routes):
        regex = getattr(route, "path_regex", None)
        # No methods: a mount or a websocket route, not an HTTP endpoint.
        if route.methods and regex is not None and regex.match(path):
            matching.append(route)
    return matching


def _methods(matching: list[RouteContext]) -> list[str]:
    """Every method the routes serve, as `Allow` lists them (empty: no route)."""
    found: set[str] = set()
    for route in matching:
        found |= route.methods or set()
    if not found:
        return []
    if "GET" in found:
        found.add("HEAD")
    found.add("OPTIONS")
    known = [m for m in _ORDER if m in found]
    return known + sorted(found - set(_ORDER))


def _allow_header(methods: list[str]) -> tuple[bytes, bytes]:
    return (_ALLOW, ", ".join(methods).encode("latin-1"))


class HttpMethodsMiddleware:
    """Answers OPTIONS, runs HEAD as GET without the body, and completes `Allow` on a 405."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        # Read on each request: routes added after the app was built count too.
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # No route of this API declares HEAD or OPTIONS itself; both are answered here.
        if scope["method"] in ("OPTIONS", "HEAD"):
            matching = _matching(self.router.routes, scope)
            methods = _methods(matching)
            if scope["method"] == "OPTIONS" and methods:
                # The route the router would have matched, for the metrics' route label.
                scope.setdefault("route", matching[0].original_route)
                allow = ", ".join(methods)
                await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
                return
            if scope["method"] == "HEAD":
                await self._head(scope, receive, send, as_get="GET" in methods)
                return
        await self.app(scope, receive, self._completing_allow(scope, send))

    async def _head(self, scope: Scope, receive: Receive, send: Send, *, as_get: bool) -> None:
        """A HEAD answer never has a body, whatever answers it (the GET route, a 404, a 405)."""

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest of the body follows; only the last message is sent
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        if not as_get:
            await self.app(scope, receive, self._completing_allow(scope, send_headers_only))
            return
        # Changed in place (not copied) so the router's additions, such as the matched route
        # the metrics label requests by, stay visible to the middleware outside; restored
        # before they read the method.
        scope["method"] = "GET"
        try:
            await self.app(scope, receive, send_headers_only)
        finally:
            scope["method"] = "HEAD"

    def _completing_allow(self, scope: Scope, send: Send) -> Send:
        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = _methods(_matching(self.router.routes, scope))
                if methods:
                    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _ALLOW]
                    message = {**message, "headers": [*headers, _allow_header(methods)]}
            await send(message)

        return send_with_allow
