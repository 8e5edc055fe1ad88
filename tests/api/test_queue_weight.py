"""A user's queue weight: set by the admin, shown on the user, carried into each job's cost."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.settings import Settings
from tests.api.conftest import assert_error, client_of, issue_key, queued_job


async def test_the_weight_defaults_to_one_and_divides_each_jobs_cost(
    client: httpx.AsyncClient, settings: Settings, model_version: dict[str, Any]
) -> None:
    plain = (await client.post("/users", json={"email": "plain@example.com"})).json()
    heavy = (await client.post("/users", json={"email": "w@example.com", "queue_weight": 4})).json()
    assert (plain["queue_weight"], heavy["queue_weight"]) == (1, 4)
    costs = []
    for user in (plain, heavy):
        body = {"user_id": user["id"], "model_version_id": model_version["id"], "prompt": "hi"}
        made = await client.post("/conversations", json=body)
        costs.append((await queued_job(settings, made.json()["id"]))["c"])
    assert costs == [1, 0.25]


async def test_the_admin_changes_a_weight_and_a_user_cannot(
    app: FastAPI, client: httpx.AsyncClient, user: dict[str, Any]
) -> None:
    changed = await client.patch(f"/users/{user['id']}", json={"queue_weight": 10})
    assert changed.status_code == 200
    assert changed.json()["queue_weight"] == 10
    assert changed.json()["email"] == user["email"]
    async with client_of(app, await issue_key(client, user["id"])) as own:
        assert (await own.get(f"/users/{user['id']}")).json()["queue_weight"] == 10
        refused = await own.patch(f"/users/{user['id']}", json={"queue_weight": 100})
    assert_error(refused, 403, "forbidden")


@pytest.mark.parametrize("weight", [0, 101, None, "2", 1.5])
async def test_a_weight_out_of_bounds_is_a_422(
    client: httpx.AsyncClient, user: dict[str, Any], weight: object
) -> None:
    response = await client.patch(f"/users/{user['id']}", json={"queue_weight": weight})
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("weight", [1, 100])
async def test_a_weight_at_either_bound_is_kept(
    client: httpx.AsyncClient, user: dict[str, Any], weight: int
) -> None:
    response = await client.patch(f"/users/{user['id']}", json={"queue_weight": weight})
    assert response.status_code == 200
    assert response.json()["queue_weight"] == weight


async def test_another_users_key_cannot_see_or_change_a_weight(
    app: FastAPI, client: httpx.AsyncClient, user: dict[str, Any]
) -> None:
    other = (await client.post("/users", json={"email": "other@example.com"})).json()
    async with client_of(app, await issue_key(client, other["id"])) as stranger:
        assert_error(await stranger.get(f"/users/{user['id']}"), 404, "not_found")
        changed = await stranger.patch(f"/users/{user['id']}", json={"queue_weight": 100})
    assert_error(changed, 403, "forbidden")
