"""Who may do what: every route demands a key, user keys see only their own, admin manages."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.api.conftest import (
    assert_error,
    client_of,
    create_model_version,
    create_user,
    issue_key,
    running_app,
)

# Routes a probe or scraper reaches without a key; everything else must refuse a stranger.
OPEN_ROUTES = {("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/health/db")}


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every operation the app documents, but the open probes and the metrics (tested apart)."""
    return sorted(
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if (method.upper(), path) not in OPEN_ROUTES and path != "/metrics"
    )


def _fill(path: str) -> str:
    """A path with every `{param}` replaced by a random id."""
    parts = [str(uuid.uuid4()) if p.startswith("{") else p for p in path.split("/")]
    return "/".join(parts)


async def _call(client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    body = {} if method in {"POST", "PATCH", "PUT"} else None
    return await client.request(method, _fill(path), json=body)


async def test_every_route_but_the_probes_refuses_a_missing_key(app: FastAPI) -> None:
    routes = _api_routes(app)
    assert len(routes) >= 17, routes
    async with client_of(app, None) as anonymous:
        for method, path in routes:
            response = await _call(anonymous, method, path)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer", (method, path)


@pytest.mark.parametrize(
    "key",
    ["aek_" + "x" * 43, "not-a-key", "aek_" + "A" * 600, "Bearer", "\u00e9"],
    ids=["unknown", "garbage", "oversized", "word", "non-ascii"],
)
async def test_every_route_refuses_a_wrong_key(app: FastAPI, key: str) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {key}".encode()}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for method, path in _api_routes(app):
            response = await client.request(method, _fill(path), headers=headers, json={})
            assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "aek_abc", "Token abc"])
async def test_a_malformed_authorization_header_is_unauthorized(app: FastAPI, header: str) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/conversations", headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")


async def test_a_new_key_is_shown_once_and_stored_only_as_its_hash(
    client: httpx.AsyncClient, database_url: URL
) -> None:
    user = await create_user(client)
    response = await client.post(f"/users/{user['id']}/api-keys", json={"name": "laptop"})
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["key"]
    assert key.startswith("aek_")
    assert len(key) >= 4 + 43  # 32 random bytes, URL-safe base64
    assert key.startswith(created["prefix"])
    assert created["name"] == "laptop"
    listed = (await client.get(f"/users/{user['id']}/api-keys")).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    dsn = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM api_key WHERE id = $1", uuid.UUID(created["id"]))
    finally:
        await conn.close()
    assert row is not None
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert all(key not in str(value) for value in dict(row).values())


async def test_a_user_key_works_and_stops_at_once_when_revoked(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await create_user(client)
    key = await issue_key(client, user["id"])
    async with client_of(app, key) as own:
        assert (await own.get(f"/users/{user['id']}")).status_code == 200
        key_id = (await own.get(f"/users/{user['id']}/api-keys")).json()[0]["id"]
        revoked = await own.delete(f"/users/{user['id']}/api-keys/{key_id}")
        assert revoked.status_code == 204
        assert_error(await own.get(f"/users/{user['id']}"), 401, "unauthorized")
    again = await client.delete(f"/users/{user['id']}/api-keys/{key_id}")
    assert_error(again, 404, "not_found")


async def test_the_keys_of_a_deleted_user_stop_working(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await create_user(client)
    key = await issue_key(client, user["id"])
    assert (await client.delete(f"/users/{user['id']}")).status_code == 204
    async with client_of(app, key) as gone:
        assert_error(await gone.get("/conversations"), 401, "unauthorized")


async def test_keys_per_user_are_bounded(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    for _ in range(20):
        await issue_key(client, user["id"])
    response = await client.post(f"/users/{user['id']}/api-keys", json={})
    assert_error(response, 409, "conflict")


ADMIN_ONLY = [
    ("POST", "/users", {"email": "new@example.com"}),
    ("GET", "/users", None),
    ("PATCH", "/users/{other}", {"email": "x@example.com"}),
    ("DELETE", "/users/{other}", None),
    ("PATCH", "/users/{self}", {"email": "me2@example.com"}),
    ("DELETE", "/users/{self}", None),
    ("POST", "/model-versions", {"provider": "ollama", "model_name": "m", "version_tag": "v9"}),
    ("PATCH", "/model-versions/{model}", {"version_tag": "v2"}),
    ("DELETE", "/model-versions/{model}", None),
]


@pytest.fixture
async def two_users(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    ana = await create_user(client, "ana@example.com")
    bob = await create_user(client, "bob@example.com")
    model = await create_model_version(client)
    return {
        "ana": ana,
        "bob": bob,
        "model": model,
        "ana_key": await issue_key(client, ana["id"]),
        "bob_key": await issue_key(client, bob["id"]),
    }


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
async def test_a_user_key_may_not_manage_users_or_the_registry(
    app: FastAPI, two_users: dict[str, Any], method: str, path: str, body: Any
) -> None:
    target = path.format(
        other=two_users["bob"]["id"], self=two_users["ana"]["id"], model=two_users["model"]["id"]
    )
    async with client_of(app, two_users["ana_key"]) as ana:
        response = await ana.request(method, target, json=body)
    assert_error(response, 403, "forbidden")


async def test_a_user_key_reads_the_registry(app: FastAPI, two_users: dict[str, Any]) -> None:
    async with client_of(app, two_users["ana_key"]) as ana:
        listed = await ana.get("/model-versions")
        one = await ana.get(f"/model-versions/{two_users['model']['id']}")
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()] == [two_users["model"]["id"]]
    assert one.status_code == 200


async def test_another_users_account_and_keys_are_not_found(
    app: FastAPI, two_users: dict[str, Any]
) -> None:
    bob = two_users["bob"]["id"]
    async with client_of(app, two_users["ana_key"]) as ana:
        for method, path in [
            ("GET", f"/users/{bob}"),
            ("GET", f"/users/{bob}/api-keys"),
            ("POST", f"/users/{bob}/api-keys"),
            ("DELETE", f"/users/{bob}/api-keys/{uuid.uuid4()}"),
        ]:
            response = await ana.request(method, path, json={} if method == "POST" else None)
            assert_error(response, 404, "not_found")
    async with client_of(app, two_users["bob_key"]) as bob_client:
        assert (await bob_client.get(f"/users/{bob}")).status_code == 200


async def _submit(client: httpx.AsyncClient, model_id: str, **fields: Any) -> httpx.Response:
    return await client.post(
        "/conversations", json={"model_version_id": model_id, "prompt": "hi", **fields}
    )


async def test_a_user_key_submits_for_itself_and_never_for_another(
    app: FastAPI, two_users: dict[str, Any]
) -> None:
    model = two_users["model"]["id"]
    async with client_of(app, two_users["ana_key"]) as ana:
        own = await _submit(ana, model)
        named = await _submit(ana, model, user_id=two_users["ana"]["id"])
        other = await _submit(ana, model, user_id=two_users["bob"]["id"])
    assert own.status_code == 202, own.text
    assert own.json()["user_id"] == two_users["ana"]["id"]
    assert named.status_code == 202, named.text
    assert_error(other, 403, "forbidden")


async def test_the_admin_submits_for_the_user_it_names_and_must_name_one(
    client: httpx.AsyncClient, two_users: dict[str, Any]
) -> None:
    model = two_users["model"]["id"]
    for_bob = await _submit(client, model, user_id=two_users["bob"]["id"])
    assert for_bob.status_code == 202, for_bob.text
    assert for_bob.json()["user_id"] == two_users["bob"]["id"]
    nobody = await _submit(client, model)
    body = assert_error(nobody, 422, "validation_error")
    assert body["details"][0]["loc"] == ["body", "user_id"]


async def test_a_user_sees_and_acts_on_its_own_conversations_only(
    app: FastAPI, client: httpx.AsyncClient, two_users: dict[str, Any]
) -> None:
    model = two_users["model"]["id"]
    async with (
        client_of(app, two_users["ana_key"]) as ana,
        client_of(app, two_users["bob_key"]) as bob,
    ):
        mine = (await _submit(ana, model)).json()["id"]
        await _submit(ana, model, response="stored")
        theirs = (await _submit(bob, model)).json()["id"]

        listed = await ana.get("/conversations")
        assert listed.headers["X-Total-Count"] == "2"
        assert {c["user_id"] for c in listed.json()} == {two_users["ana"]["id"]}
        filtered = await ana.get("/conversations", params={"user_id": two_users["bob"]["id"]})
        assert filtered.json() == []
        assert filtered.headers["X-Total-Count"] == "0"

        for method, path, body in [
            ("GET", f"/conversations/{theirs}", None),
            ("PATCH", f"/conversations/{theirs}", {"response": "mine now"}),
            ("POST", f"/conversations/{theirs}/cancel", None),
            ("DELETE", f"/conversations/{theirs}", None),
        ]:
            assert_error(await ana.request(method, path, json=body), 404, "not_found")

        assert (await ana.get(f"/conversations/{mine}")).status_code == 200
        assert (await ana.post(f"/conversations/{mine}/cancel")).status_code == 200
    still = await client.get(f"/conversations/{theirs}")
    assert still.json()["status"] == "pending"
    assert (await client.get("/conversations")).headers["X-Total-Count"] == "3"


async def test_a_revoked_key_is_refused_by_every_replica_at_once(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    """Two API processes (replicas) on one database: no replica keeps a key alive."""
    user = await create_user(client)
    key = await issue_key(client, user["id"])
    async with (
        running_app(settings) as replica_a,
        running_app(settings) as replica_b,
        client_of(replica_a, key) as via_a,
        client_of(replica_b, key) as via_b,
    ):
        assert (await via_a.get("/conversations")).status_code == 200
        assert (await via_b.get("/conversations")).status_code == 200
        key_id = (await via_a.get(f"/users/{user['id']}/api-keys")).json()[0]["id"]
        assert (await via_a.delete(f"/users/{user['id']}/api-keys/{key_id}")).status_code == 204
        assert_error(await via_b.get("/conversations"), 401, "unauthorized")


def test_worker_metrics_listen_on_loopback_unless_told_otherwise() -> None:
    assert Settings(_env_file=None).WORKER_METRICS_HOST == "127.0.0.1"  # type: ignore[call-arg]


@pytest.mark.parametrize(("length", "accepted"), [(512, True), (513, False)])
async def test_a_key_is_looked_at_up_to_512_characters(
    settings: Settings, clean_db: None, length: int, accepted: bool
) -> None:
    """At the edge of the key-length limit, on the hot poll and on a routed request alike."""
    long_key = "k" * length
    async with (
        running_app(settings, ADMIN_API_KEY=SecretStr(long_key)) as application,
        client_of(application, long_key) as caller,
    ):
        poll = await caller.get(f"/conversations/{uuid.uuid4()}")
        listing = await caller.get("/users")
    if accepted:
        assert_error(poll, 404, "not_found")
        assert listing.status_code == 200
    else:
        assert_error(poll, 401, "unauthorized")
        assert_error(listing, 401, "unauthorized")
