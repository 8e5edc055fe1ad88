"""Signed webhooks through the real API and worker processes, to a receiver on loopback.

Every wait is on an event: the receiver's recorded requests, or the delivery's row as
`GET /conversations/{id}/webhook` shows it."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import URL
from standardwebhooks import Webhook

from shared.settings import Settings
from tests.support import database
from tests.support.auth import bearer
from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import wait_until
from tests.support.stack import Stack, running_stack
from tests.support.webhook_receiver import HANG, WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-0123456789ab").decode()
WEBHOOK_ENV = {
    "WEBHOOK_SECRET": SECRET,
    "WEBHOOK_MAX_ATTEMPTS": "4",
    "WEBHOOK_TIMEOUT_SECONDS": "3",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.1",
    "WEBHOOK_RETRY_MAX_SECONDS": "0.3",
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def hook_stack(
    settings: Settings,
    e2e_database: URL,
    fake_llm_server: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Loopback allowed explicitly, as a deployment would allow an internal receiver."""
    workdir = tmp_path_factory.mktemp("webhooks")
    with running_stack(
        settings,
        e2e_database,
        fake_llm_server.url,
        workdir,
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        **WEBHOOK_ENV,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def closed_stack(
    settings: Settings, fake_llm_server: FakeLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The default rules (nothing internal allowed), on a database of its own: its sweeper
    must not meet the other stack's deliveries."""
    workdir = tmp_path_factory.mktemp("webhooks-closed")
    with (
        database.migrated_database() as url,
        running_stack(settings, url, fake_llm_server.url, workdir, **WEBHOOK_ENV) as running,
    ):
        yield running


def _submit(stack: Stack, prompt: str, callback_url: str) -> str:
    user_id, model_id = stack.setup_model()
    return str(stack.submit(user_id, model_id, prompt, callback_url=callback_url)["id"])


def _log(stack: Stack, cid: str) -> dict[str, Any]:
    response = stack.client.get(f"/conversations/{cid}/webhook")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait_state(stack: Stack, cid: str, state: str) -> dict[str, Any]:
    wait_until(lambda: _log(stack, cid)["state"] == state, timeout=30, what=f"delivery {state}")
    return _log(stack, cid)


def test_a_completed_conversation_is_delivered_once_signed_as_get_returns_it(
    hook_stack: Stack, receiver: WebhookReceiver, fake_llm: FakeLLMServer
) -> None:
    path = "/completed"
    cid = _submit(hook_stack, "deliver me", receiver.url(path))
    wait_until(lambda: len(receiver.received(path)) == 1, timeout=30, what="the delivery")
    log = _wait_state(hook_stack, cid, "delivered")
    [request] = receiver.received(path)

    # The receiver verifies it with the reference library; the body is the conversation.
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload == hook_stack.client.get(f"/conversations/{cid}").json()
    assert payload["status"] == "completed"
    assert payload["response"] == "echo: deliver me"
    assert request.headers["webhook-id"] == log["webhook_id"]
    assert request.headers["content-type"] == "application/json"
    assert (log["attempts"], log["last_status_code"], log["last_error"]) == (1, 200, None)
    assert log["delivered_at"] is not None
    assert log["next_attempt_at"] is None
    assert [a["status_code"] for a in log["history"]] == [200]
    assert len(receiver.received(path)) == 1


def test_a_failing_receiver_gets_retries_with_the_same_webhook_id_and_the_log_shows_them(
    hook_stack: Stack, receiver: WebhookReceiver, fake_llm: FakeLLMServer
) -> None:
    path = "/flaky"
    receiver.answer(path, [500, 500, 200])
    cid = _submit(hook_stack, "retry me", receiver.url(path))
    log = _wait_state(hook_stack, cid, "delivered")
    requests = receiver.received(path)
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {log["webhook_id"]}
    for request in requests:  # every attempt is signed afresh and verifies
        Webhook(SECRET).verify(request.body, request.headers)
    assert log["attempts"] == 3
    assert [(a["attempt"], a["status_code"]) for a in log["history"]] == [
        (1, 500),
        (2, 500),
        (3, 200),
    ]
    assert [a["error"] for a in log["history"]] == ["HTTP 500", "HTTP 500", None]
    assert (log["last_status_code"], log["last_error"]) == (200, None)


def test_a_receiver_that_does_not_answer_in_time_is_tried_again(
    hook_stack: Stack, receiver: WebhookReceiver, fake_llm: FakeLLMServer
) -> None:
    path = "/slow"
    receiver.answer(path, [HANG, 200])
    cid = _submit(hook_stack, "time me out", receiver.url(path))
    log = _wait_state(hook_stack, cid, "delivered")
    assert [(a["status_code"], a["error"]) for a in log["history"]] == [
        (None, "no answer within 3s"),
        (200, None),
    ]
    first, second = receiver.received(path)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == log["webhook_id"]


def test_a_receiver_that_never_recovers_ends_failed_after_the_max_attempts(
    hook_stack: Stack, receiver: WebhookReceiver, fake_llm: FakeLLMServer
) -> None:
    path = "/down"
    receiver.answer(path, [503] * 10)
    cid = _submit(hook_stack, "give up", receiver.url(path))
    log = _wait_state(hook_stack, cid, "failed")
    assert (log["attempts"], log["last_status_code"], log["last_error"]) == (4, 503, "HTTP 503")
    assert log["delivered_at"] is None
    assert len(receiver.received(path)) == 4


def test_a_cancel_delivers_cancelled(
    hook_stack: Stack, receiver: WebhookReceiver, fake_llm: FakeLLMServer
) -> None:
    path = "/cancelled"
    prompt = "a long story to cancel"
    fake_llm.configure(hold=True, hold_after_pieces=1)
    try:
        cid = _submit(hook_stack, prompt, receiver.url(path))
        wait_until(lambda: fake_llm.stats().calls_for(prompt) == 1, timeout=20, what="model call")
        assert hook_stack.client.post(f"/conversations/{cid}/cancel").status_code == 200
        wait_until(lambda: len(receiver.received(path)) == 1, timeout=30, what="the delivery")
    finally:
        fake_llm.configure(hold=False)
    [request] = receiver.received(path)
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert (payload["id"], payload["status"]) == (cid, "cancelled")
    assert _wait_state(hook_stack, cid, "delivered")["attempts"] == 1


def test_the_log_is_the_owners_alone(hook_stack: Stack, receiver: WebhookReceiver) -> None:
    path = "/owned"
    user_id, model_id = hook_stack.setup_model()
    other, _ = hook_stack.setup_model()
    keys = {
        who: hook_stack.client.post(f"/users/{who}/api-keys", json={"name": "hooks"}).json()["key"]
        for who in (user_id, other)
    }
    owner = httpx.Client(base_url=hook_stack.base_url, headers=bearer(keys[user_id]))
    stranger = httpx.Client(base_url=hook_stack.base_url, headers=bearer(keys[other]))
    with owner, stranger:
        submitted = owner.post(
            "/conversations",
            json={
                "model_version_id": model_id,
                "prompt": "mine",
                "callback_url": receiver.url(path),
            },
        )
        assert submitted.status_code == 202, submitted.text
        cid = submitted.json()["id"]
        wait_until(lambda: len(receiver.received(path)) == 1, timeout=30, what="the delivery")
        assert owner.get(f"/conversations/{cid}/webhook").status_code == 200
        assert stranger.get(f"/conversations/{cid}/webhook").status_code == 404


def test_a_delivery_whose_job_or_row_was_lost_is_made_by_the_sweeper(
    hook_stack: Stack, receiver: WebhookReceiver
) -> None:
    path = "/swept"
    cid = _submit(hook_stack, "sweep me", receiver.url(path))
    first = _wait_state(hook_stack, cid, "delivered")

    async def sql(query: str) -> None:
        url = make_dsn(hook_stack.env["DATABASE_URL"])
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(query, cid)
        finally:
            await conn.close()

    # Due again with no job in Redis (as after Redis lost it): the sweeper re-sends it.
    asyncio.run(
        sql(
            "UPDATE webhook_delivery SET state = 'pending', delivered_at = NULL, "
            "next_attempt_at = now() - interval '1 minute' WHERE conversation_id = $1"
        )
    )
    wait_until(lambda: len(receiver.received(path)) == 2, timeout=30, what="the re-sent job")
    # No row at all (its writer died before making it): the sweeper makes it and sends it.
    asyncio.run(sql("DELETE FROM webhook_delivery WHERE conversation_id = $1"))
    wait_until(lambda: len(receiver.received(path)) == 3, timeout=30, what="the remade row")
    assert {r.headers["webhook-id"] for r in receiver.received(path)} == {first["webhook_id"]}


def make_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def test_loopback_is_refused_at_submit_when_not_allowed(
    closed_stack: Stack, receiver: WebhookReceiver
) -> None:
    user_id, model_id = closed_stack.setup_model()
    for url in (receiver.url("/x"), "http://[::1]:9/x", "http://169.254.169.254/latest"):
        refused = closed_stack.client.post(
            "/conversations",
            json={
                "user_id": user_id,
                "model_version_id": model_id,
                "prompt": "p",
                "callback_url": url,
            },
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["details"][0]["loc"] == ["body", "callback_url"]
        assert "not allowed" in refused.json()["message"]
    assert receiver.received("/x") == []


def test_a_name_resolving_to_loopback_is_refused_at_delivery_and_nothing_is_sent(
    closed_stack: Stack, receiver: WebhookReceiver
) -> None:
    path = "/rebound"
    # `localhost` passes the literal check at submit; the delivery resolves it to 127.0.0.1.
    cid = _submit(closed_stack, "resolve me", receiver.url(path, host="localhost"))
    log = _wait_state(closed_stack, cid, "failed")
    assert log["attempts"] == 1
    assert log["last_status_code"] is None
    assert log["last_error"] == (
        "destination refused: localhost resolves to 127.0.0.1, a loopback address; "
        "not allowed (WEBHOOK_ALLOWED_HOSTS)"
    )
    assert [a["error"] for a in log["history"]] == [log["last_error"]]
    assert receiver.received(path) == []
    assert json.loads(closed_stack.client.get(f"/conversations/{cid}").text)["status"] == (
        "completed"
    )
