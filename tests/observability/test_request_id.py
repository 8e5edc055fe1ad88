"""Request ids: accepted when sane, made otherwise, echoed, bound to logs, one access line."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider

from api.middleware.edge import EdgeMiddleware
from shared.logs import log_context
from shared.metrics import create_metrics
from tests.support.auth import ADMIN_HEADERS
from tests.support.log_capture import LogCapture, captured_logging

GENERATED = re.compile(r"[0-9a-f]{32}")
SLOW_HANDLER_SECONDS = 0.05


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/conversations/{conversation_id}")
    async def read(conversation_id: str, request: Request) -> dict[str, str | None]:
        logger.info("conversation_read", conversation_id=conversation_id)
        return {"state": request.state.request_id, "bound": log_context().get("request_id")}

    @app.get("/sets-its-own")
    async def sets_its_own() -> Response:
        return Response(headers={"X-Request-ID": "from-the-handler"})

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(SLOW_HANDLER_SECONDS)
        return {"slow": True}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug in handler")

    app.add_middleware(
        EdgeMiddleware,
        metrics=create_metrics(process_metrics=False),
        tracer_provider=TracerProvider(),
        detail_min_ms=0,
        trace_fast_reads=True,
    )
    return app


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    with captured_logging() as capture:
        yield capture


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=ADMIN_HEADERS
    ) as client:
        yield client


@pytest.mark.parametrize("sane", ["abc-123", "req.1_A", "x" * 128])
async def test_sane_incoming_id_is_echoed_and_bound(client: httpx.AsyncClient, sane: str) -> None:
    response = await client.get("/conversations/c1", headers={"X-Request-ID": sane})
    assert response.headers["X-Request-ID"] == sane
    assert response.json() == {"state": sane, "bound": sane}


@pytest.mark.parametrize(
    "unsafe", [b"x" * 129, b"has space", b"a\tb", b"{json}", "ünïcode".encode(), b"a\r\nb", b""]
)
async def test_unsafe_incoming_id_is_replaced(client: httpx.AsyncClient, unsafe: bytes) -> None:
    response = await client.get("/conversations/c1", headers={"X-Request-ID": unsafe})
    assert GENERATED.fullmatch(response.headers["X-Request-ID"])
    assert response.json()["bound"] == response.headers["X-Request-ID"]


async def test_missing_id_is_generated_fresh_per_request(client: httpx.AsyncClient) -> None:
    first = (await client.get("/conversations/c1")).headers["X-Request-ID"]
    second = (await client.get("/conversations/c1")).headers["X-Request-ID"]
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second


async def test_response_carries_exactly_one_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/sets-its-own", headers={"X-Request-ID": "mine"})
    assert response.headers.get_list("X-Request-ID") == ["mine"]


async def test_lines_logged_during_the_request_carry_its_id(
    logs: LogCapture, client: httpx.AsyncClient
) -> None:
    await client.get("/conversations/c1?secret=1", headers={"X-Request-ID": "req-42"})

    (handler_line,) = logs.find("conversation_read")
    assert handler_line["request_id"] == "req-42"
    (access,) = logs.find("http_request")
    assert access["request_id"] == "req-42"
    assert access["level"] == "INFO"
    assert access["extra"]["method"] == "GET"
    assert access["extra"]["path"] == "/conversations/c1"
    assert access["extra"]["status"] == 200
    assert isinstance(access["extra"]["duration_ms"], float)
    assert log_context() == {}


async def test_the_access_line_times_the_whole_request(
    logs: LogCapture, client: httpx.AsyncClient
) -> None:
    """The duration covers the handler: it is at least what the handler is known to wait."""
    await client.get("/slow")
    (access,) = logs.find("http_request")
    assert access["extra"]["duration_ms"] >= SLOW_HANDLER_SECONDS * 1000


async def test_unhandled_error_logs_one_error_line_with_the_id(
    logs: LogCapture, client: httpx.AsyncClient
) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500

    (access,) = logs.find("http_request")
    assert access["level"] == "ERROR"
    assert access["request_id"] == "req-500"
    assert access["extra"]["status"] == 500
    assert "RuntimeError: bug in handler" in access["exception"]
