"""One trace and one set of ids from the HTTP request, through Redis, to the model call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import wait_until
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


def _trace(stack: Stack, trace_id: str) -> list[dict[str, Any]]:
    return [span for span in stack.spans() if span["trace_id"] == trace_id]


def test_one_trace_links_request_enqueue_job_database_and_model(
    stack: Stack, fake_llm: FakeLLMServer
) -> None:
    user_id, model_id = stack.setup_model()
    accepted = stack.submit(user_id, model_id, "trace me")
    trace_id = accepted["trace_id"]
    assert stack.wait_all([accepted["id"]])[accepted["id"]]["status"] == "completed"
    polled = stack.client.get(f"/conversations/{accepted['id']}").json()
    assert polled["trace_id"] == trace_id

    def complete() -> bool:
        return any(s["name"].startswith("chat ") for s in _trace(stack, trace_id))

    wait_until(complete, timeout=10, what="the worker's spans")
    spans = _trace(stack, trace_id)
    by_id = {span["span_id"]: span for span in spans}

    def parent(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parent_span_id"]]

    request = next(s for s in spans if s["name"] == "POST /conversations" and s["kind"] == "SERVER")
    publish = next(s for s in spans if s["name"] == "generate_conversation publish")
    job = next(s for s in spans if s["name"] == "generate_conversation process")
    chat = next(s for s in spans if s["name"] == "chat llama3.2:3b")
    assert request["service_name"] == "ai-eng-api-api"
    assert request["parent_span_id"] is None
    assert publish["kind"] == "PRODUCER"
    assert parent(publish) is request
    assert job["kind"] == "CONSUMER"
    assert job["service_name"] == "ai-eng-api-worker"
    assert parent(job) is publish
    assert chat["kind"] == "CLIENT"
    assert parent(chat) is job
    assert chat["attributes"]["gen_ai.usage.output_tokens"] == 3
    http_call = next(s for s in spans if s["parent_span_id"] == chat["span_id"])
    assert http_call["name"] == "POST"
    assert http_call["kind"] == "CLIENT"
    assert "/api/chat" in json.dumps(http_call["attributes"])
    # Database work on both sides of the queue belongs to the same trace.
    database_services = {
        s["service_name"] for s in spans if s["attributes"].get("db.system") == "postgresql"
    }
    assert database_services == {"ai-eng-api-api", "ai-eng-api-worker"}
    assert not any("trace me" in json.dumps(s["attributes"]) for s in spans)


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_logs_are_json_lines_carrying_the_request_trace_and_conversation_ids(
    stack: Stack, fake_llm: FakeLLMServer
) -> None:
    user_id, model_id = stack.setup_model()
    response = stack.client.post(
        "/conversations",
        json={"user_id": user_id, "model_version_id": model_id, "prompt": "log me"},
        headers={"X-Request-ID": "req-e2e-42"},
    )
    assert response.headers["X-Request-ID"] == "req-e2e-42"
    accepted = response.json()
    stack.wait_all([accepted["id"]])

    api_lines = _json_lines(stack.api.log())
    submitted = [line for line in api_lines if line["request_id"] == "req-e2e-42"]
    # One line per request: the API's access line, carrying the ids.
    assert [line["message"] for line in submitted] == ["http_request"]
    for line in submitted:
        assert line["trace_id"] == accepted["trace_id"]
        assert line["service"] == "ai-eng-api"
        assert line["process"] == "api"
        assert {"timestamp", "level", "logger", "environment", "span_id"} <= set(line)

    def worker_lines() -> list[dict[str, Any]]:
        lines = [line for w in stack.workers for line in _json_lines(w.log())]
        return [line for line in lines if line.get("conversation_id") == accepted["id"]]

    wait_until(
        lambda: any(line["message"] == "generation_completed" for line in worker_lines()),
        timeout=10,
        what="the worker's completion line",
    )
    lines = worker_lines()
    assert all(line["trace_id"] == accepted["trace_id"] for line in lines)
    assert all(line["job_id"] == f"conversation:{accepted['id']}" for line in lines)
    assert all(line["process"] == "worker" for line in lines)
    everything = stack.api.log() + "".join(w.log() for w in stack.workers)
    assert "log me" not in everything
    assert "echo: log me" not in everything
