"""Several model servers behind one provider, through the real processes: no server ever
has more requests at once than its capacity, however many workers and slots; a server that
goes away mid-flow leaves its work to the others, with nothing lost, and the API's readiness
shows it set aside."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from shared.model_servers import server_label
from shared.settings import Settings
from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import wait_until
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

CAPACITY = 2
SUBMISSIONS = 24


@pytest.fixture
def second_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer().start()
    try:
        yield server
    finally:
        server.stop()


def _submit_all(stack: Stack, prompt: str) -> list[str]:
    user, model = stack.setup_model()
    return [stack.submit(user, model, f"{prompt} {n}")["id"] for n in range(SUBMISSIONS)]


def test_no_server_ever_has_more_requests_than_its_capacity(
    settings: Settings,
    own_database: URL,
    fake_llm: FakeLLMServer,
    second_server: FakeLLMServer,
    tmp_path: Path,
) -> None:
    for server in (fake_llm, second_server):
        server.configure(mode="slow", delay_seconds=0.3)
    with running_stack(
        settings,
        own_database,
        fake_llm.url,
        tmp_path,
        workers=3,
        OLLAMA_SERVERS=second_server.url,
        LLM_SERVER_CAPACITY=str(CAPACITY),
        WORKER_MAX_JOBS="50",
        WORKER_LEASE_SECONDS="4",
        WORKER_JOB_TIMEOUT_SECONDS="3",
        OLLAMA_TIMEOUT_SECONDS="2",
    ) as stack:
        ids = _submit_all(stack, "capped")
        # A worker killed while it holds slots: they come back when their lease ends, and
        # meanwhile they still count, so no server is pushed over its capacity.
        wait_until(lambda: fake_llm.stats().generation_calls >= 2, timeout=30, what="calls")
        stack.workers[0].kill()
        rows = stack.wait_all(ids, timeout=120)
    assert {row["status"] for row in rows.values()} == {"completed"}
    first, second = fake_llm.stats(), second_server.stats()
    assert first.generation_calls + second.generation_calls >= SUBMISSIONS
    assert 1 <= first.max_in_flight <= CAPACITY
    assert 1 <= second.max_in_flight <= CAPACITY


def test_a_server_that_goes_away_leaves_its_work_to_the_others(
    settings: Settings,
    own_database: URL,
    fake_llm: FakeLLMServer,
    second_server: FakeLLMServer,
    tmp_path: Path,
) -> None:
    for server in (fake_llm, second_server):
        server.configure(mode="slow", delay_seconds=0.2)
    with running_stack(
        settings, own_database, fake_llm.url, tmp_path, workers=2, OLLAMA_SERVERS=second_server.url
    ) as stack:
        ids = _submit_all(stack, "failover")
        wait_until(
            lambda: second_server.stats().generation_calls >= 2, timeout=30, what="both in use"
        )
        second_server.stop()

        def shown_down() -> bool:
            servers = stack.client.get("/health/ready").json()["model_servers"]
            return any(
                s["server"] == server_label(second_server.url) and not s["healthy"] for s in servers
            )

        # The worker that found it refusing marks it in Redis, where the API reads it.
        wait_until(shown_down, timeout=30, what="the stopped server shown down in readiness")
        rows = stack.wait_all(ids, timeout=90)
        refusals = sum(w.log().count("model_server_refused") for w in stack.workers)
    failed = {row["error_code"]: row["error_message"] for row in rows.values() if row["error_code"]}
    assert {row["status"] for row in rows.values()} == {"completed"}, failed
    # A refused connection sent the call to the other server within the same attempt (the
    # worker logs each such move); calls cut off when the server went away were retried.
    assert refusals >= 1
    assert fake_llm.stats().generation_calls + second_server.stats().generation_calls >= SUBMISSIONS
