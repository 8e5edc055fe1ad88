from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from shared.settings import Settings
from tests.support.auth import ADMIN_HEADERS


async def test_docs_and_schema_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs")).status_code == 200


def test_every_route_declares_its_error_statuses(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for path, operations in paths.items():
        if path.startswith("/health") or path == "/metrics":
            continue
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "500" in statuses, (method, path)
            assert "422" in statuses, (method, path)
            assert "503" in statuses, (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
    post = paths["/conversations"]["post"]["responses"]
    assert {"201", "202", "400", "404"} <= set(post)


def test_every_route_taking_a_body_documents_the_malformed_json_status(app: FastAPI) -> None:
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert "400" in operation["responses"], (method, path)


@pytest.mark.parametrize(
    ("switches", "openapi", "docs"),
    [
        ({"OPENAPI_ENABLED": False}, 404, 404),
        ({"SWAGGER_UI_ENABLED": False}, 200, 404),
        ({"OPENAPI_JSON_PATH": "/api/schema.json", "SWAGGER_UI_PATH": "/swagger"}, 200, 200),
    ],
)
async def test_openapi_switches(
    settings: Settings, switches: dict[str, object], openapi: int, docs: int
) -> None:
    custom = settings.model_copy(update=switches)
    app = create_app(custom)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers=ADMIN_HEADERS
    ) as client:
        assert (await client.get(custom.OPENAPI_JSON_PATH)).status_code == openapi
        assert (await client.get(custom.SWAGGER_UI_PATH)).status_code == docs
