"""OPTIONS, HEAD and 405 answer for the whole path, not for the one route that matched first."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import assert_error, client_of, create_user

# Paths the OpenAPI document leaves out but the app serves.
UNDOCUMENTED_GET_PATHS = ["/openapi.json", "/docs", "/docs/oauth2-redirect"]
EXPECTED_USERS_ALLOW = {"GET", "HEAD", "POST", "OPTIONS"}


def _allow(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["Allow"].split(",")}


def _path_methods(app: FastAPI) -> dict[str, set[str]]:
    """Every concrete path (ids filled in) and the methods its routes serve, from the document."""
    paths: dict[str, set[str]] = {}
    for template, operations in app.openapi()["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), template)
        methods = {method.upper() for method in operations}
        if "GET" in methods:
            methods.add("HEAD")
        paths[concrete] = methods | {"OPTIONS"}
    for path in UNDOCUMENTED_GET_PATHS:
        paths[path] = {"GET", "HEAD", "OPTIONS"}
    return paths


async def test_options_lists_every_method_of_every_path(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    paths = _path_methods(app)
    assert paths["/users"] == EXPECTED_USERS_ALLOW
    for path, methods in paths.items():
        response = await client.options(path)
        assert response.status_code == 204, (path, response.text)
        assert _allow(response) == methods, path
        assert response.content == b""
        assert response.headers["X-Request-ID"]


async def test_options_needs_no_credentials(app: FastAPI) -> None:
    async with client_of(app, None) as anonymous:
        response = await anonymous.options(f"/users/{uuid.uuid4()}")
    assert response.status_code == 204
    assert _allow(response) == {"GET", "HEAD", "PATCH", "DELETE", "OPTIONS"}


@pytest.mark.parametrize("method", ["PUT", "TRACE", "PROPFIND"])
async def test_a_405_lists_every_method_of_the_path(
    app: FastAPI, client: httpx.AsyncClient, method: str
) -> None:
    for path, methods in _path_methods(app).items():
        assert method not in methods
        response = await client.request(method, path)
        assert_error(response, 405, "method_not_allowed")
        assert _allow(response) == methods, path


async def test_the_first_matching_route_no_longer_decides_allow(client: httpx.AsyncClient) -> None:
    # `/users` is two routes (GET, POST); Starlette used to name only the first.
    response = await client.delete("/users")
    assert_error(response, 405, "method_not_allowed")
    assert _allow(response) == EXPECTED_USERS_ALLOW
    response = await client.post(f"/users/{uuid.uuid4()}")
    assert _allow(response) == {"GET", "HEAD", "PATCH", "DELETE", "OPTIONS"}


async def test_head_answers_like_get_without_a_body(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await create_user(client)
    gets = [p for p, methods in _path_methods(app).items() if "GET" in methods]
    gets += [f"/users/{user['id']}", "/users?limit=1", "/users/not-a-uuid"]
    for path in gets:
        headers = {"X-Request-ID": "same-id"}
        get = await client.get(path, headers=headers)
        head = await client.head(path, headers=headers)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        expected = dict(get.headers)
        if path == "/metrics":
            # The scrape itself is counted between the two, so its length moves.
            expected.pop("content-length")
            head.headers.pop("content-length")
        assert dict(head.headers) == expected, path


async def test_head_is_refused_like_get_without_credentials(app: FastAPI) -> None:
    async with client_of(app, None) as anonymous:
        get = await anonymous.get("/users")
        head = await anonymous.head("/users")
    assert_error(get, 401, "unauthorized")
    assert head.status_code == 401
    assert head.headers["WWW-Authenticate"] == get.headers["WWW-Authenticate"]
    assert head.content == b""


async def test_head_where_there_is_no_get_is_a_405_without_a_body(
    client: httpx.AsyncClient,
) -> None:
    user = await create_user(client)
    response = await client.head(f"/users/{user['id']}/api-keys/{uuid.uuid4()}")
    assert response.status_code == 405
    assert response.content == b""
    assert "HEAD" not in _allow(response)
    assert "DELETE" in _allow(response)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT"])
async def test_unknown_paths_stay_not_found(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/nope")
    assert response.status_code == 404
    assert "Allow" not in response.headers
    if method != "HEAD":
        assert_error(response, 404, "not_found")


def test_the_document_shows_no_head_or_options_operations(app: FastAPI) -> None:
    for path, operations in app.openapi()["paths"].items():
        assert not {"head", "options"} & set(operations), path


async def test_head_and_options_are_counted_by_route(client: httpx.AsyncClient) -> None:
    await client.head("/users")
    await client.options("/users")
    metrics = (await client.get("/metrics")).text
    assert 'http_requests_total{method="HEAD",route="/users",status="200"} 1.0' in metrics
    assert 'http_requests_total{method="OPTIONS",route="/users",status="204"} 1.0' in metrics


async def test_routes_added_later_are_known(app: FastAPI, client: httpx.AsyncClient) -> None:
    @app.get("/later")
    async def later() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/later")
    async def later_post() -> dict[str, Any]:
        return {"ok": True}

    assert _allow(await client.options("/later")) == {"GET", "HEAD", "POST", "OPTIONS"}
    head = await client.head("/later")
    assert head.status_code == 200
    assert head.content == b""
