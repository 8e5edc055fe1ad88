"""Pure ASGI middleware of the API: the edge layer (request ids, security headers, the server
span, metrics, the access line), the hot routes, request limits, unhandled errors and HTTP
method semantics."""
