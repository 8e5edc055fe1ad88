"""With the shipped default, a fast request's client spans (SQL, Redis) stay behind, and the
trace is still whole: the server spans, the producer span and the worker's spans under it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import wait_until
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

# Far above what a request on loopback takes: "fast" without depending on the machine.
NEVER_SLOW_MS = "600000"


@pytest.fixture
def stack(
    settings: Settings, own_database: URL, fake_llm: FakeLLMServer, tmp_path: Path
) -> Iterator[Stack]:
    with running_stack(
        settings, own_database, fake_llm.url, tmp_path, TRACE_DETAIL_MIN_MS=NEVER_SLOW_MS
    ) as running:
        yield running


def test_a_fast_requests_trace_keeps_its_own_spans_and_the_job(stack: Stack) -> None:
    user_id, model_id = stack.setup_model()
    accepted = stack.submit(user_id, model_id, "trace me")
    trace_id = accepted["trace_id"]
    assert stack.wait_all([accepted["id"]])[accepted["id"]]["status"] == "completed"

    def spans() -> list[dict[str, object]]:
        return [s for s in stack.spans() if s["trace_id"] == trace_id]

    wait_until(
        lambda: any(str(s["name"]).startswith("chat ") for s in spans()),
        timeout=10,
        what="the worker's spans",
    )
    by_id = {s["span_id"]: s for s in spans()}
    api = sorted(
        (str(s["kind"]), str(s["name"]))
        for s in by_id.values()
        if s["service_name"] == "ai-eng-api-api"
    )
    assert api == [("PRODUCER", "generate_conversation publish"), ("SERVER", "POST /conversations")]
    job = next(s for s in by_id.values() if s["name"] == "generate_conversation process")
    assert by_id[job["parent_span_id"]]["name"] == "generate_conversation publish"
    # The worker's own statements are spans as ever.
    assert any(
        s["service_name"] == "ai-eng-api-worker" and s["kind"] == "CLIENT" for s in by_id.values()
    )


def test_fast_polls_leave_no_trace_and_a_missing_conversation_does(stack: Stack) -> None:
    user_id, model_id = stack.setup_model()
    accepted = stack.submit(user_id, model_id, "poll me")
    assert stack.wait_all([accepted["id"]])[accepted["id"]]["status"] == "completed"
    assert stack.client.get(f"/conversations/{uuid.uuid4()}").status_code == 404

    def api_servers() -> list[tuple[str, int]]:
        return [
            (str(s["name"]), int(s["attributes"]["http.response.status_code"]))
            for s in stack.spans()
            if s["service_name"] == "ai-eng-api-api"
            and s["kind"] == "SERVER"
            and "/conversations" in str(s["name"])
        ]

    wait_until(lambda: len(api_servers()) >= 2, timeout=10, what="the API's server spans")
    # The polls (every 200 of the GETs) were fast and fine: only the submission and the 404.
    assert sorted(api_servers()) == [
        ("GET /conversations/{conversation_id}", 404),
        ("POST /conversations", 202),
    ]
