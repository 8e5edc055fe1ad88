from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.db import SessionFactory
from tests.api.conftest import assert_error, create_model_version, create_user
from tests.factories import make_conversation, set_columns


def payload(user: dict[str, Any], model_version: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user["id"],
        "model_version_id": model_version["id"],
        "prompt": "hello",
        **extra,
    }


async def test_with_a_response_it_is_stored_completed(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    response = await client.post(
        "/conversations", json=payload(user, model_version, response="world", temperature=0.2)
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "completed"
    assert body["response"] == "world"
    assert body["temperature"] == 0.2
    assert body["completed_at"] is not None
    assert body["attempts"] == 0
    assert response.headers["Location"].endswith(f"/conversations/{body['id']}")


async def test_without_a_response_it_is_accepted_pending(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    response = await client.post(
        "/conversations",
        json=payload(
            user,
            model_version,
            system_instruction="be brief",
            context="c",
            top_p=0.9,
            max_tokens=32,
        ),
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["response"] is None
    assert body["system_instruction"] == "be brief"
    assert body["max_tokens"] == 32
    location = response.headers["Location"]
    assert location.endswith(f"/conversations/{body['id']}")
    polled = await client.get(location)
    assert polled.status_code == 200
    assert polled.json()["status"] == "pending"


async def test_unknown_user_and_model_version_are_not_found(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    ghost = {"id": str(uuid.uuid4())}
    body = assert_error(
        await client.post("/conversations", json=payload(ghost, model_version)), 404, "not_found"
    )
    assert body["message"] == "User not found"
    body = assert_error(
        await client.post("/conversations", json=payload(user, ghost)), 404, "not_found"
    )
    assert body["message"] == "Model version not found"


async def test_inactive_user_is_not_found(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    await client.delete(f"/users/{user['id']}")
    body = assert_error(
        await client.post("/conversations", json=payload(user, model_version)), 404, "not_found"
    )
    assert body["message"] == "User not found"


async def test_provider_the_workers_cannot_serve_is_a_bad_request(
    client: httpx.AsyncClient, user: dict[str, Any]
) -> None:
    other = await create_model_version(client, provider="acme-llm")
    body = assert_error(
        await client.post("/conversations", json=payload(user, other)), 400, "bad_request"
    )
    assert body["details"]["provider"] == "acme-llm"
    assert "ollama" in body["details"]["supported_providers"]
    # A stored answer needs no provider at all.
    stored = await client.post("/conversations", json=payload(user, other, response="ok"))
    assert stored.status_code == 201


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 2.1},
        {"temperature": -0.1},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"prompt": ""},
        {"status": "completed"},
        {"input_tokens": 5},
        {"latency_ms": 3},
        {"attempts": 1},
    ],
)
async def test_invalid_or_server_owned_fields_are_rejected(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    model_version: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    response = await client.post("/conversations", json=payload(user, model_version, **extra))
    assert_error(response, 422, "validation_error")


async def test_list_filters_and_orders(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    other_user = await create_user(client, "bob@example.com")
    other_model = await create_model_version(client, model_name="other")
    done = (
        await client.post("/conversations", json=payload(user, model_version, response="r"))
    ).json()
    waiting = (await client.post("/conversations", json=payload(user, other_model))).json()
    (await client.post("/conversations", json=payload(other_user, model_version))).json()

    by_user = await client.get("/conversations", params={"user_id": user["id"]})
    assert {c["id"] for c in by_user.json()} == {done["id"], waiting["id"]}
    assert by_user.headers["X-Total-Count"] == "2"
    by_status = await client.get("/conversations", params={"status": "completed"})
    assert [c["id"] for c in by_status.json()] == [done["id"]]
    by_model = await client.get("/conversations", params={"model_version_id": other_model["id"]})
    assert [c["id"] for c in by_model.json()] == [waiting["id"]]
    oldest_first = await client.get("/conversations", params={"order_by": "created_at_asc"})
    assert oldest_first.json()[0]["id"] == done["id"]
    by_latency = await client.get("/conversations", params={"order_by": "latency_ms_desc"})
    assert len(by_latency.json()) == 3
    assert_error(
        await client.get("/conversations", params={"status": "lost"}), 422, "validation_error"
    )


async def test_patch_edits_only_completed_responses(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    done = (
        await client.post("/conversations", json=payload(user, model_version, response="r"))
    ).json()
    response = await client.patch(f"/conversations/{done['id']}", json={"response": "edited"})
    assert response.status_code == 200
    assert response.json()["response"] == "edited"
    waiting = (await client.post("/conversations", json=payload(user, model_version))).json()
    assert_error(
        await client.patch(f"/conversations/{waiting['id']}", json={"response": "x"}),
        409,
        "conflict",
    )
    assert_error(
        await client.patch(f"/conversations/{done['id']}", json={"prompt": "x"}),
        422,
        "validation_error",
    )
    assert_error(
        await client.patch(f"/conversations/{uuid.uuid4()}", json={"response": "x"}),
        404,
        "not_found",
    )


async def test_cancel_stops_a_pending_conversation_once(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    waiting = (await client.post("/conversations", json=payload(user, model_version))).json()
    response = await client.post(f"/conversations/{waiting['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["completed_at"] is not None
    assert_error(await client.post(f"/conversations/{waiting['id']}/cancel"), 409, "conflict")
    assert_error(await client.post(f"/conversations/{uuid.uuid4()}/cancel"), 404, "not_found")


async def test_delete_hides_and_cancels(
    client: httpx.AsyncClient, user: dict[str, Any], model_version: dict[str, Any]
) -> None:
    waiting = (await client.post("/conversations", json=payload(user, model_version))).json()
    assert (await client.delete(f"/conversations/{waiting['id']}")).status_code == 204
    assert_error(await client.get(f"/conversations/{waiting['id']}"), 404, "not_found")
    assert (await client.get("/conversations")).json() == []
    assert_error(await client.delete(f"/conversations/{waiting['id']}"), 404, "not_found")


async def test_a_conversation_waiting_for_a_retry_says_why_and_until_when(
    client: httpx.AsyncClient, session_factory: SessionFactory
) -> None:
    cid = await make_conversation(session_factory)
    retry_at = datetime.now(UTC) + timedelta(seconds=30)
    await set_columns(
        session_factory,
        cid,
        attempts=1,
        error_code="llm_unavailable",
        error_message="model server refused the connection",
        next_attempt_at=retry_at,
    )
    body = (await client.get(f"/conversations/{cid}")).json()
    assert body["status"] == "pending"
    assert (body["error_code"], body["attempts"]) == ("llm_unavailable", 1)
    assert datetime.fromisoformat(body["next_attempt_at"]) == retry_at
