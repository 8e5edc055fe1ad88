"""The hot routes' own dispatch (api/middleware/hot_routes.py): the plain cases are served
without the router, and every answer is the one the router gives.

"Through the router" is the same app with a dependency override in place, which makes the
hot lane step aside; `served_hot` counts the requests the lane answered itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.middleware import hot_routes
from shared.settings import Settings
from tests.api.conftest import assert_error, client_of, issue_key, running_app
from tests.support.auth import ADMIN_KEY

# Differ from one answer to the next whoever answers.
_VARYING_HEADERS = {"x-request-id", "location", "content-length"}
_VARYING_FIELDS = {"id", "conversation_id", "created_at", "updated_at", "completed_at", "trace_id"}


@pytest.fixture
def served_hot(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests the hot lane authenticated, on its own or with a user key's poll (the
    router's route never calls either)."""
    calls: list[int] = []
    authenticate = hot_routes.authenticate
    poll = hot_routes.conversations.poll_with_user_key

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await authenticate(*args, **kwargs)

    async def counting_poll(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await poll(*args, **kwargs)

    monkeypatch.setattr(hot_routes, "authenticate", counting)
    monkeypatch.setattr(hot_routes.conversations, "poll_with_user_key", counting_poll)
    return calls


def _unused_dependency() -> None:
    """The key of the override that makes the lane step aside; never called."""


def body(user: dict[str, Any], model_version: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user["id"],
        "model_version_id": model_version["id"],
        "prompt": "hello",
        **extra,
    }


def answer(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """What must be the same whoever answers: status, headers and body, less what varies."""
    headers = {k: v for k, v in response.headers.items() if k not in _VARYING_HEADERS}
    content = response.json()
    if isinstance(content, dict):
        content = {k: v for k, v in content.items() if k not in _VARYING_FIELDS}
        if isinstance(content.get("details"), dict):
            content["details"] = {
                k: v for k, v in content["details"].items() if k not in _VARYING_FIELDS
            }
    return response.status_code, headers, content


async def test_plain_requests_are_served_by_the_hot_lane(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    model_version: dict[str, Any],
    served_hot: list[int],
) -> None:
    created = await client.post("/conversations", json=body(user, model_version))
    assert created.status_code == 202, created.text
    read = await client.get(f"/conversations/{created.json()['id']}")
    assert read.status_code == 200
    assert read.json() == created.json()
    assert len(served_hot) == 2


async def _answers(
    app: FastAPI,
    user: dict[str, Any],
    model_version: dict[str, Any],
    user_key: str,
    run: str,
    someone: dict[str, Any],
) -> list[tuple[int, dict[str, str], Any]]:
    """The same requests, each answered: successes and every error the lane can meet."""
    other = str(uuid.uuid4())
    found: list[tuple[int, dict[str, str], Any]] = []
    async with (
        client_of(app, ADMIN_KEY) as admin,
        client_of(app, user_key) as own,
        client_of(app, None) as anonymous,
        client_of(app, "wrong") as wrong,
    ):
        created = await admin.post("/conversations", json=body(user, model_version))
        done = await admin.post("/conversations", json=body(user, model_version, response="stored"))
        conversation = f"/conversations/{created.json()['id']}"
        theirs = await admin.post(
            "/conversations", json=body(someone, model_version, response="theirs")
        )
        responses = [
            created,
            done,
            theirs,
            await own.post("/conversations", json=body(user, model_version)),
            await own.post("/conversations", json=body(user, model_version, user_id=other)),
            await admin.post("/conversations", json=body(user, model_version, user_id=None)),
            await admin.post(
                "/conversations",
                json=body(user, model_version, model_version_id=other),
            ),
            await anonymous.post("/conversations", json=body(user, model_version)),
            await wrong.post("/conversations", json=body(user, model_version)),
            await admin.get(conversation),
            await own.get(conversation),
            await own.get(f"/conversations/{theirs.json()['id']}"),
            await own.get(f"/conversations/{other}"),
            await admin.get(f"/conversations/{other}"),
            await anonymous.get(conversation),
            await wrong.get(conversation),
        ]
        key = {"Idempotency-Key": f"key-{run}"}
        first = await own.post("/conversations", json=body(user, model_version), headers=key)
        replayed = await own.post("/conversations", json=body(user, model_version), headers=key)
        assert replayed.json()["id"] == first.json()["id"]
        changed = await own.post(
            "/conversations", json=body(user, model_version, prompt="other"), headers=key
        )
        responses += [first, replayed, changed]
    for response in responses:
        found.append(answer(response))
    return found


async def test_the_hot_lane_answers_as_the_router(
    app: FastAPI,
    user: dict[str, Any],
    model_version: dict[str, Any],
    served_hot: list[int],
) -> None:
    async with client_of(app, ADMIN_KEY) as admin:
        user_key = await issue_key(admin, user["id"])
        someone = (await admin.post("/users", json={"email": "someone@example.com"})).json()
    hot = await _answers(app, user, model_version, user_key, "hot", someone)
    assert len(served_hot) == len(hot)
    served_hot.clear()
    app.dependency_overrides[_unused_dependency] = _unused_dependency
    try:
        routed = await _answers(app, user, model_version, user_key, "routed", someone)
    finally:
        app.dependency_overrides.clear()
    assert not served_hot
    assert hot == routed
    assert [status for status, _, _ in hot] == [
        202, 201, 201, 202, 403, 422, 404, 401, 401, 200, 200, 404, 404, 404, 401, 401, 202, 202,
        422,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("request_args", "status", "code"),
    [
        ({"content": b'{"prompt": "x",', "headers": {"Content-Type": "application/json"}}, 400,
         "bad_request"),
        ({"json": {"prompt": "x"}}, 422, "validation_error"),
        ({"json": ["not", "an", "object"]}, 422, "validation_error"),
        ({"content": b"prompt=x", "headers": {"Content-Type": "text/plain"}}, 422,
         "validation_error"),
        ({"json": {"prompt": "x"}, "headers": {"Idempotency-Key": "has space"}}, 422,
         "validation_error"),
        ({"json": {"prompt": "x"}, "headers": {"Prefer": "wait=" + "1" * 300}}, 422,
         "validation_error"),
    ],
)  # fmt: skip
async def test_what_the_lane_does_not_take_the_router_answers(
    client: httpx.AsyncClient,
    served_hot: list[int],
    request_args: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = await client.post("/conversations", **request_args)
    assert_error(response, status, code)
    assert not served_hot


async def test_a_body_in_pieces_is_read_whole_by_whoever_answers(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    model_version: dict[str, Any],
    served_hot: list[int],
) -> None:
    async def pieces(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 7):
            yield data[start : start + 7]

    headers = {"Content-Type": "application/json"}
    valid = json.dumps(body(user, model_version, prompt="in pieces")).encode()
    accepted = await client.post("/conversations", content=pieces(valid), headers=headers)
    assert accepted.status_code == 202
    assert accepted.json()["prompt"] == "in pieces"
    assert len(served_hot) == 1
    invalid = json.dumps(body(user, model_version, temperature=9)).encode()
    refused = await client.post("/conversations", content=pieces(invalid), headers=headers)
    details = assert_error(refused, 422, "validation_error")["details"]
    assert [d["loc"] for d in details] == [["body", "temperature"]]
    assert len(served_hot) == 1


@pytest.mark.parametrize(
    "spelling",
    [
        lambda u: u.hex,  # no hyphens
        lambda u: "{" + str(u) + "}",
        lambda u: f"{u}?wait=0",
    ],
)
async def test_other_spellings_of_a_get_go_through_the_router(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    model_version: dict[str, Any],
    served_hot: list[int],
    spelling: Any,
) -> None:
    created = (await client.post("/conversations", json=body(user, model_version))).json()
    served_hot.clear()
    response = await client.get(f"/conversations/{spelling(uuid.UUID(created['id']))}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == created["id"]
    assert not served_hot


async def test_a_malformed_id_is_the_routers_422(
    client: httpx.AsyncClient, served_hot: list[int]
) -> None:
    details = assert_error(await client.get("/conversations/not-a-uuid"), 422, "validation_error")
    assert [d["loc"] for d in details["details"]] == [["path", "conversation_id"]]
    assert not served_hot


async def test_the_lane_names_spans_and_metrics_by_route(
    settings: Settings,
    clean_db: None,
    tmp_path: Path,
    user: dict[str, Any],
    model_version: dict[str, Any],
    served_hot: list[int],
) -> None:
    spans = tmp_path / "spans.jsonl"
    async with running_app(
        settings, OTEL_TRACES_FILE=str(spans), TRACE_FAST_READS=True
    ) as application:
        async with client_of(application, ADMIN_KEY) as admin:
            created = await admin.post("/conversations", json=body(user, model_version))
            await admin.get(f"/conversations/{created.json()['id']}")
            await admin.get(f"/conversations/{uuid.uuid4()}")
        registry = application.state.metrics.registry
    assert len(served_hot) == 3
    server = [s for s in map(json.loads, spans.read_text().splitlines()) if s["kind"] == "SERVER"]
    assert [(s["name"], s["attributes"]["http.response.status_code"]) for s in server] == [
        ("POST /conversations", 202),
        ("GET /conversations/{conversation_id}", 200),
        ("GET /conversations/{conversation_id}", 404),
    ]
    assert all(s["attributes"]["http.route"] == s["name"].split(" ")[1] for s in server)
    for method, route, status in [
        ("POST", "/conversations", "202"),
        ("GET", "/conversations/{conversation_id}", "200"),
        ("GET", "/conversations/{conversation_id}", "404"),
    ]:
        labels = {"method": method, "route": route, "status": status}
        assert registry.get_sample_value("http_requests_total", labels) == 1
