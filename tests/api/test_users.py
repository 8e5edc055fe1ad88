from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import assert_error, create_user


async def test_create_returns_the_user(client: httpx.AsyncClient) -> None:
    response = await client.post("/users", json={"email": "  Ana@Example.com "})
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "Ana@Example.com"
    assert body["is_active"] is True
    uuid.UUID(body["id"])
    assert {"created_at", "updated_at"} <= set(body)


async def test_duplicate_email_is_a_conflict_whatever_the_case(client: httpx.AsyncClient) -> None:
    await create_user(client, "ana@example.com")
    body = assert_error(
        await client.post("/users", json={"email": "ANA@example.com"}), 409, "conflict"
    )
    assert body["details"] == {"email": "ANA@example.com"}


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"email": "not-an-email"},
        {"email": "a@b"},
        {"email": "x" * 320 + "@e.com"},
        {"email": 5},
    ],
)
async def test_invalid_email_is_a_validation_error(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    body = assert_error(await client.post("/users", json=payload), 422, "validation_error")
    assert body["details"][0]["loc"][0] == "body"


async def test_unknown_fields_are_rejected(client: httpx.AsyncClient) -> None:
    response = await client.post("/users", json={"email": "a@b.co", "is_active": False})
    body = assert_error(response, 422, "validation_error")
    assert body["details"][0]["type"] == "extra_forbidden"


async def test_get_unknown_user_is_not_found(client: httpx.AsyncClient) -> None:
    body = assert_error(await client.get(f"/users/{uuid.uuid4()}"), 404, "not_found")
    assert body["message"] == "User not found"


async def test_get_with_a_malformed_id_is_a_validation_error(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/users/not-a-uuid"), 422, "validation_error")


async def test_get_returns_the_user(client: httpx.AsyncClient, user: dict[str, Any]) -> None:
    response = await client.get(f"/users/{user['id']}")
    assert response.status_code == 200
    assert response.json() == user


async def test_list_pages_orders_and_counts(client: httpx.AsyncClient) -> None:
    for email in ("c@e.com", "a@e.com", "b@e.com"):
        await create_user(client, email)
    response = await client.get("/users", params={"order_by": "email_asc", "limit": 2})
    assert response.status_code == 200
    assert [u["email"] for u in response.json()] == ["a@e.com", "b@e.com"]
    assert response.headers["X-Total-Count"] == "3"
    response = await client.get("/users", params={"order_by": "email_asc", "limit": 2, "offset": 2})
    assert [u["email"] for u in response.json()] == ["c@e.com"]
    newest_first = (await client.get("/users")).json()
    assert [u["email"] for u in newest_first] == ["b@e.com", "a@e.com", "c@e.com"]


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"order_by": "id_asc"}]
)
async def test_list_rejects_bad_paging(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    assert_error(await client.get("/users", params=params), 422, "validation_error")


async def test_patch_changes_the_email(client: httpx.AsyncClient, user: dict[str, Any]) -> None:
    response = await client.patch(f"/users/{user['id']}", json={"email": "new@example.com"})
    assert response.status_code == 200
    assert response.json()["email"] == "new@example.com"
    assert (await client.get(f"/users/{user['id']}")).json()["email"] == "new@example.com"


async def test_patch_to_a_taken_email_is_a_conflict(
    client: httpx.AsyncClient, user: dict[str, Any]
) -> None:
    other = await create_user(client, "bob@example.com")
    response = await client.patch(f"/users/{other['id']}", json={"email": "ANA@example.com"})
    assert_error(response, 409, "conflict")


async def test_patch_rejects_null_and_unknown_fields(
    client: httpx.AsyncClient, user: dict[str, Any]
) -> None:
    assert_error(
        await client.patch(f"/users/{user['id']}", json={"email": None}), 422, "validation_error"
    )
    assert_error(
        await client.patch(f"/users/{user['id']}", json={"id": "x"}), 422, "validation_error"
    )


async def test_patch_unknown_user_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.patch(f"/users/{uuid.uuid4()}", json={"email": "a@b.co"})
    assert_error(response, 404, "not_found")


async def test_delete_is_soft_and_hides_the_user(
    client: httpx.AsyncClient, user: dict[str, Any]
) -> None:
    response = await client.delete(f"/users/{user['id']}")
    assert response.status_code == 204
    assert_error(await client.get(f"/users/{user['id']}"), 404, "not_found")
    assert (await client.get("/users")).json() == []
    assert_error(await client.delete(f"/users/{user['id']}"), 404, "not_found")
    # The address stays reserved: a deleted account is not silently re-created.
    assert_error(await client.post("/users", json={"email": user["email"]}), 409, "conflict")


async def test_a_malformed_key_request_is_a_documented_bad_request(
    app: FastAPI, client: httpx.AsyncClient, user: dict[str, Any]
) -> None:
    response = await client.post(
        f"/users/{user['id']}/api-keys",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "bad_request")
    responses = app.openapi()["paths"]["/users/{user_id}/api-keys"]["post"]["responses"]
    assert "400" in responses
