from __future__ import annotations

import httpx
import pytest

from api.main import create_app
from shared.settings import Settings
from tests.api.conftest import assert_error


async def test_live_db_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    assert (await client.get("/health/db")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


@pytest.mark.usefixtures("clean_db")
async def test_ready_reports_redis_down(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = assert_error(await client.get("/health/ready"), 503, "service_unavailable")
            assert body["details"]["redis"] == "unreachable"
            assert body["details"]["database"] == "ok"
            assert (await client.get("/health/live")).status_code == 200
