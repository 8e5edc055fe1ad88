from __future__ import annotations

from typing import Any

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


def _target(document: dict[str, Any], link: dict[str, Any]) -> dict[str, Any]:
    path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
    operation: dict[str, Any] = document["paths"][path.replace("~1", "/").replace("~0", "~")]
    return operation[method]


def test_links_lead_to_operations_and_fields_that_exist(app: FastAPI) -> None:
    document = app.openapi()
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                for name, link in response.get("links", {}).items():
                    where = (method, path, status, name)
                    assert status.startswith("2"), where
                    target = _target(document, link)
                    parameters = target.get("parameters", [])
                    required = {p["name"] for p in parameters if p["in"] == "path"}
                    assert required <= set(link.get("parameters", {})), where
                    assert set(link.get("parameters", {})) <= {p["name"] for p in parameters}
                    if "requestBody" in link:
                        body = target["requestBody"]["content"]["application/json"]["schema"]
                        fields = schemas[body["$ref"].rsplit("/", 1)[-1]]["properties"]
                        assert set(link["requestBody"]) <= set(fields), where
    # From the registry to a submission, and from a submission to its poll and its owner.
    listed = document["paths"]["/model-versions"]["get"]["responses"]["200"]["links"]
    assert "SubmitConversation" in listed
    for status in ("201", "202"):
        submitted = document["paths"]["/conversations"]["post"]["responses"][status]["links"]
        assert {"GetConversation", "CancelConversation", "GetOwner"} <= set(submitted)


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
