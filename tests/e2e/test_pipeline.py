"""Submit over HTTP, let real worker processes answer, poll until done."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import ROOT
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def test_a_submitted_conversation_is_answered(stack: Stack, fake_llm: FakeLLMServer) -> None:
    user_id, model_id = stack.setup_model()
    response = stack.client.post(
        "/conversations",
        json={"user_id": user_id, "model_version_id": model_id, "prompt": "what is arq"},
    )
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "pending"
    location = response.headers["Location"]
    done = stack.wait_all([accepted["id"]])[accepted["id"]]
    assert done["status"] == "completed"
    assert done["response"] == "echo: what is arq"
    assert done["output_tokens"] == 4
    assert done["input_tokens"] > 0
    assert done["total_tokens"] == done["input_tokens"] + done["output_tokens"]
    # The durations are the row's own timestamps: queued from creation to the first claim,
    # the model call inside the time the attempt held the row.
    created, started, completed = (
        datetime.fromisoformat(done[key]) for key in ("created_at", "started_at", "completed_at")
    )
    assert created < started < completed
    assert done["queue_wait_ms"] == pytest.approx(_ms(started - created), abs=0.001)
    assert 0 < done["latency_ms"] <= _ms(completed - started)
    assert done["attempts"] == 1
    assert stack.client.get(location).json()["status"] == "completed"
    listed = stack.client.get("/conversations", params={"status": "completed", "user_id": user_id})
    assert [c["id"] for c in listed.json()] == [accepted["id"]]


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        ({"mode": "status", "status": 404}, "llm_model_not_found"),
        ({"mode": "status", "status": 400}, "llm_bad_request"),
        ({"mode": "garbage"}, "llm_bad_response"),
        ({"mode": "status", "status": 503}, "llm_unavailable"),
        ({"mode": "close_mid_stream"}, "llm_unavailable"),
        ({"mode": "slow", "delay_seconds": 4}, "llm_unavailable"),
    ],
)
def test_each_failure_kind_ends_failed_with_its_code(
    stack: Stack, fake_llm: FakeLLMServer, behaviour: dict[str, object], code: str
) -> None:
    fake_llm.configure(**behaviour)
    user_id, model_id = stack.setup_model()
    cid = stack.submit(user_id, model_id, f"fail {code}")["id"]
    done = stack.wait_all([cid], timeout=60)[cid]
    assert done["status"] == "failed"
    assert done["error_code"] == code
    assert done["error_message"]
    expected_attempts = 3 if code == "llm_unavailable" else 1
    assert done["attempts"] == expected_attempts
    assert fake_llm.stats().calls_for(f"fail {code}") == expected_attempts


def test_two_workers_answer_fifty_conversations_exactly_once(
    stack: Stack, fake_llm: FakeLLMServer
) -> None:
    assert len(stack.workers) == 2
    user_id, model_id = stack.setup_model()
    ids = [stack.submit(user_id, model_id, f"question {i}")["id"] for i in range(50)]
    done = stack.wait_all(ids, timeout=90)
    assert {body["status"] for body in done.values()} == {"completed"}
    stats = fake_llm.stats()
    assert stats.generation_calls == 50
    assert all(stats.calls_for(f"question {i}") == 1 for i in range(50))
    assert {body["attempts"] for body in done.values()} == {1}


def test_a_stored_answer_is_not_queued(stack: Stack, fake_llm: FakeLLMServer) -> None:
    user_id, model_id = stack.setup_model()
    response = stack.client.post(
        "/conversations",
        json={"user_id": user_id, "model_version_id": model_id, "prompt": "p", "response": "r"},
    )
    assert response.status_code == 201
    assert response.json()["status"] == "completed"
    assert fake_llm.stats().generation_calls == 0


def _check(env: dict[str, str]) -> int:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "worker", "--check"], cwd=ROOT, env=full, timeout=30, check=False
    ).returncode


def test_heartbeats_count_each_worker_and_back_the_container_check(stack: Stack) -> None:
    queue = stack.client.get("/health/ready").json()["queue"]
    assert queue["workers_alive"] == len(stack.workers) == 2
    assert _check(stack.env) == 0
    assert _check({**stack.env, "QUEUE_NAME": "a-queue-nobody-serves"}) == 1
