"""Oversized requests are refused before the app reads them: 413 for a body, 431 for headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message, Scope

from shared.settings import Settings
from tests.api.conftest import assert_error, client_of, running_app
from tests.support.auth import ADMIN_KEY

LIMIT = 4096


@pytest.fixture
async def small_app(settings: Settings, clean_db: None) -> AsyncIterator[FastAPI]:
    async with running_app(
        settings, MAX_REQUEST_BODY_BYTES=LIMIT, MAX_HEADER_BYTES=LIMIT
    ) as application:
        yield application


@pytest.fixture
async def small(small_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(small_app, ADMIN_KEY) as client:
        yield client


def _user_body(size: int, email: str = "ana@example.com") -> bytes:
    """A valid `POST /users` body of exactly `size` bytes (JSON allows trailing spaces)."""
    body = json.dumps({"email": email}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def _assert_too_large(response: httpx.Response) -> None:
    body = assert_error(response, 413, "bad_request")
    assert body["details"] == {"max_bytes": LIMIT}
    assert response.headers["X-Request-ID"]


async def _users(client: httpx.AsyncClient) -> int:
    return int((await client.get("/users")).headers["X-Total-Count"])


JSON = {"Content-Type": "application/json"}


async def test_a_body_of_exactly_the_limit_is_accepted(small: httpx.AsyncClient) -> None:
    response = await small.post("/users", content=_user_body(LIMIT), headers=JSON)
    assert response.status_code == 201, response.text


async def test_a_body_one_byte_over_is_refused(small: httpx.AsyncClient) -> None:
    response = await small.post("/users", content=_user_body(LIMIT + 1), headers=JSON)
    _assert_too_large(response)
    assert await _users(small) == 0


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    small_app: FastAPI,
) -> None:
    # Straight through ASGI: httpx would not send a length its body does not have.
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/users",
        "raw_path": b"/users",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", str(LIMIT + 1).encode()), (b"host", b"t")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
        "state": {},
    }
    await small_app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413
    assert reads == 0


async def _chunks(sizes: list[int], pulled: list[int]) -> AsyncIterator[bytes]:
    for size in sizes:
        pulled.append(size)
        yield b" " * size


async def test_a_chunked_body_over_the_limit_is_refused_while_streaming(
    small: httpx.AsyncClient,
) -> None:
    pulled: list[int] = []
    head = b'{"email": "ana@example.com"'

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for chunk in _chunks([1024] * 16, pulled):
            yield chunk
        yield b"}"

    response = await small.post("/users", content=body(), headers=JSON)
    assert "content-length" not in response.request.headers
    _assert_too_large(response)
    # The read stopped at the chunk that crossed the limit; the rest was never asked for.
    assert len(head) + sum(pulled) > LIMIT
    assert len(head) + sum(pulled[:-1]) <= LIMIT
    assert await _users(small) == 0


async def test_a_chunked_body_of_exactly_the_limit_is_accepted(small: httpx.AsyncClient) -> None:
    whole = _user_body(LIMIT)

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(whole), 1000):
            yield whole[start : start + 1000]

    response = await small.post("/users", content=body(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.status_code == 201, response.text


def _header_bytes(request: httpx.Request) -> int:
    return sum(len(name) + len(value) for name, value in request.headers.raw)


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 431)])
async def test_headers_past_the_limit_are_refused(
    small: httpx.AsyncClient, extra: int, status: int
) -> None:
    probe = small.build_request("GET", "/users", headers={"X-Padding": ""})
    padding = "p" * (LIMIT - _header_bytes(probe) + extra)
    request = small.build_request("GET", "/users", headers={"X-Padding": padding})
    assert _header_bytes(request) == LIMIT + extra
    response = await small.send(request)
    if status == 431:
        body = assert_error(response, 431, "bad_request")
        assert body["details"] == {"max_bytes": LIMIT}
        assert response.headers["X-Request-ID"]
    else:
        assert response.status_code == 200, response.text


async def test_the_default_limits_apply_to_the_default_app(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    big = _user_body(settings.MAX_REQUEST_BODY_BYTES + 1)
    response = await client.post("/users", content=big, headers=JSON)
    body = assert_error(response, 413, "bad_request")
    assert body["details"] == {"max_bytes": settings.MAX_REQUEST_BODY_BYTES}
    response = await client.get("/users", headers={"X-Padding": "p" * settings.MAX_HEADER_BYTES})
    assert_error(response, 431, "bad_request")


async def test_refusals_are_counted(small: httpx.AsyncClient) -> None:
    await small.post("/users", content=_user_body(LIMIT + 1), headers=JSON)
    metrics = (await small.get("/metrics")).text
    assert 'http_requests_total{method="POST",route="unmatched",status="413"} 1.0' in metrics
