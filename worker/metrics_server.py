"""A minimal HTTP endpoint for Prometheus to scrape the worker: `GET /metrics`, nothing else.

It runs on the worker's own event loop (asyncio.start_server), so there is no thread to keep in
step with arq's lifecycle; rendering the registry is quick and done inline.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass

from loguru import logger
from prometheus_client import CollectorRegistry

from shared.metrics import render_metrics

# A scraper sends its request at once; a connection that dribbles is dropped, not waited on.
_REQUEST_TIMEOUT_SECONDS = 5.0
_MAX_HEADER_LINES = 100


@dataclass(frozen=True)
class MetricsServer:
    """A running metrics endpoint; `stop()` it in arq's `on_shutdown`."""

    server: asyncio.Server
    host: str
    # The bound port, which differs from the requested one when that was 0.
    port: int

    async def stop(self) -> None:
        """Stop accepting and wait for open connections to finish."""
        self.server.close()
        await self.server.wait_closed()


def _response(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    request_line = await reader.readline()
    # Headers are read and ignored so the client is not reset mid-send.
    for _ in range(_MAX_HEADER_LINES):
        if await reader.readline() in {b"\r\n", b"\n", b""}:
            break
    method, target, _version = request_line.decode("latin-1").split(" ", 2)
    return method, target.split("?", 1)[0]


async def _serve(
    registry: CollectorRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        async with asyncio.timeout(_REQUEST_TIMEOUT_SECONDS):
            method, path = await _read_request(reader)
            if path != "/metrics":
                response = _response("404 Not Found", b"not found\n", "text/plain")
            elif method != "GET":
                response = _response("405 Method Not Allowed", b"GET only\n", "text/plain")
            else:
                body, content_type = render_metrics(registry)
                response = _response("200 OK", body, content_type)
            writer.write(response)
            await writer.drain()
    except (TimeoutError, ConnectionError, ValueError):
        # A malformed or abandoned request only costs its connection.
        pass
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def start_metrics_server(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve `registry` on `http://host:port/metrics` until `stop()` is awaited."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve(registry, reader, writer)

    server = await asyncio.start_server(handle, host, port)
    bound_port: int = server.sockets[0].getsockname()[1]
    logger.info("metrics_server_started", host=host, port=bound_port)
    return MetricsServer(server=server, host=host, port=bound_port)
