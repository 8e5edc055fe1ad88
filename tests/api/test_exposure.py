"""What strangers see of the operational routes: probes answer, internals stay inside."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from shared.settings import Environment, Exposure, Settings
from tests.api.conftest import (
    assert_error,
    client_of,
    create_model_version,
    create_user,
    issue_key,
    running_app,
)
from tests.support.auth import ADMIN_KEY


async def test_probes_answer_a_stranger_with_the_status_alone(app: FastAPI) -> None:
    async with client_of(app, None) as anonymous:
        for path in ("/health/live", "/health/ready", "/health/db"):
            response = await anonymous.get(path)
            assert response.status_code == 200, path
            assert response.json() == {"status": "ok"}, path


async def test_readiness_details_are_for_the_admin(client: httpx.AsyncClient) -> None:
    body = (await client.get("/health/ready")).json()
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert set(body["queue"]) == {
        "depth",
        "workers_alive",
        "oldest_pending_age_seconds",
        "by_priority",
    }


async def test_a_user_key_gets_no_readiness_details(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await create_user(client)
    async with client_of(app, await issue_key(client, user["id"])) as own:
        assert (await own.get("/health/ready")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("access", "anonymous", "user", "admin"),
    [
        (Exposure.PUBLIC, 200, 200, 200),
        (Exposure.ADMIN, 401, 403, 200),
        (Exposure.OFF, 404, 404, 404),
    ],
)
async def test_metrics_exposure_is_a_setting(
    settings: Settings,
    clean_db: None,
    access: Exposure,
    anonymous: int,
    user: int,
    admin: int,
) -> None:
    async with running_app(settings, METRICS_ACCESS=access) as app:
        async with client_of(app, ADMIN_KEY) as admin_client:
            account = await create_user(admin_client)
            key = await issue_key(admin_client, account["id"])
            assert (await admin_client.get("/metrics")).status_code == admin
        async with client_of(app, None) as stranger:
            assert (await stranger.get("/metrics")).status_code == anonymous
        async with client_of(app, key) as own:
            assert (await own.get("/metrics")).status_code == user


async def test_production_serves_no_openapi_or_swagger_by_default(
    settings: Settings, clean_db: None
) -> None:
    async with (
        running_app(settings, ENVIRONMENT=Environment.PRD) as app,
        client_of(app, ADMIN_KEY) as admin,
    ):
        for path in ("/openapi.json", "/docs"):
            assert_error(await admin.get(path), 404, "not_found")


async def test_the_openapi_document_declares_bearer_auth(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["HTTPBearer"]["description"],
        }
    }
    create = schema["paths"]["/conversations"]["post"]
    assert create["security"] == [{"HTTPBearer": []}]
    assert "401" in create["responses"]


async def test_location_is_a_path_unless_a_public_base_url_is_set(
    settings: Settings, clean_db: None
) -> None:
    for base, expected_prefix in (
        (None, "/conversations/"),
        ("https://api.example.com", "https://api.example.com/conversations/"),
    ):
        async with (
            running_app(settings, PUBLIC_BASE_URL=base) as app,
            client_of(app, ADMIN_KEY) as admin,
        ):
            user = await create_user(admin, f"{len(expected_prefix)}@example.com")
            model = await create_model_version(admin, version_tag=str(len(expected_prefix)))
            response = await admin.post(
                "/conversations",
                json={"user_id": user["id"], "model_version_id": model["id"], "prompt": "hi"},
                headers={"Host": "evil.example.net"},
            )
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
        assert location == expected_prefix + response.json()["id"]
        assert "evil" not in location


@pytest.mark.parametrize("path", ["/health/live", "/conversations", "/nope", "/users"])
async def test_every_response_carries_the_security_headers(app: FastAPI, path: str) -> None:
    async with client_of(app, None) as anonymous:
        response = await anonymous.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert response.headers["Cache-Control"] == "no-store"
