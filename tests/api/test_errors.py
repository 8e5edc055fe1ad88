"""The error contract holds for every kind of failure, not only the ones routes raise."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from api.main import create_app
from shared import db
from shared.settings import Settings
from tests.api.conftest import assert_error
from tests.support.auth import ADMIN_HEADERS


async def test_malformed_json_is_a_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    body = assert_error(response, 400, "bad_request")
    assert body["details"][0]["type"] == "json_invalid"


async def test_unknown_route_is_not_found(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404, "not_found")


async def test_wrong_method_is_method_not_allowed(client: httpx.AsyncClient) -> None:
    assert_error(await client.put("/users"), 405, "method_not_allowed")


async def test_unexpected_errors_leak_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    response = await client.get("/boom", headers={"X-Request-ID": "boom-1"})
    body = assert_error(response, 500, "internal_error")
    assert "hunter2" not in str(body)
    assert body["details"] is None
    assert response.headers["X-Request-ID"] == "boom-1"
    metrics = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/boom",status="500"} 1.0' in metrics


@pytest.fixture
async def dead_db_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    broken = settings.model_copy(
        update={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing"}
    )
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=ADMIN_HEADERS
        ) as client:
            yield client


async def test_database_down_is_service_unavailable_with_retry_after(
    dead_db_client: httpx.AsyncClient,
) -> None:
    response = await dead_db_client.get("/users")
    assert_error(response, 503, "service_unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert_error(await dead_db_client.get("/health/db"), 503, "service_unavailable")


async def _cut_api_connections(database_url: URL) -> int:
    """Terminate the API pool's database sessions, as a database restart would."""
    conn = await asyncpg.connect(
        database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name LIKE '%-api'",
            database_url.database,
        )
    finally:
        await conn.close()
    return int(killed)


async def test_an_idle_connection_killed_by_a_restart_is_replaced_unseen(
    client: httpx.AsyncClient, database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every returned one is "idle"
    assert (await client.get("/users")).status_code == 200
    assert await _cut_api_connections(database_url) >= 1
    assert (await client.get("/users")).status_code == 200


async def test_a_busy_connection_is_not_pinged_and_a_cut_costs_one_503(
    client: httpx.AsyncClient, database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    assert (await client.get("/users")).status_code == 200
    assert await _cut_api_connections(database_url) >= 1
    response = await client.get("/users")
    assert_error(response, 503, "service_unavailable")
    assert (await client.get("/users")).status_code == 200


async def test_a_cut_on_the_driver_path_costs_one_503_and_the_connection_is_replaced(
    client: httpx.AsyncClient, database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls run their statement on the driver, outside SQLAlchemy's own error handling: a
    connection found dead there is a 503 once, then dropped from the pool, not reused."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    poll = f"/conversations/{uuid.uuid4()}"
    assert (await client.get(poll)).status_code == 404
    assert await _cut_api_connections(database_url) >= 1
    assert_error(await client.get(poll), 503, "service_unavailable")
    assert (await client.get(poll)).status_code == 404
