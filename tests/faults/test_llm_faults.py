"""An LLM server that is down, slow, erroring, talking nonsense or hanging up mid-answer."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import FaultStack, MakeStack, wait_for_calls
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.fault

# Retries far enough apart for the test to change the stand-in's mind in between.
PATIENT = {"WORKER_RETRY_BASE_SECONDS": "0.5", "WORKER_RETRY_MAX_SECONDS": "1"}


@pytest.fixture(scope="module")
def shared_stack_env() -> dict[str, str]:
    return PATIENT


def test_an_llm_that_is_down_is_retried_until_it_starts(make_stack: MakeStack) -> None:
    port = free_port()
    stack = make_stack(
        workers=1,
        llm_url=f"http://127.0.0.1:{port}",
        WORKER_MAX_ATTEMPTS="8",
        **PATIENT,
    )
    cid = stack.submit("llm not there yet")

    def refused_twice() -> bool:
        row = stack.db.rows([cid])[cid]
        return row.attempts >= 2 and row.status == "pending"

    wait_until(refused_twice, timeout=10, what="two refused attempts")
    with FakeLLMServer(port=port) as late_llm:
        row = stack.settle([cid], timeout=15)[cid]
        assert row.status == "completed"
        assert row.attempts >= 3
        # Refused connections cost no generation: the server that came up answered once.
        assert late_llm.stats().calls_for("llm not there yet") == 1


@pytest.mark.parametrize(
    ("status", "failures"), [(503, 2), (500, 2), (429, 1)], ids=["503", "500", "429"]
)
def test_an_llm_error_is_retried_until_the_llm_recovers(
    shared_stack: FaultStack, fake_llm: FakeLLMServer, status: int, failures: int
) -> None:
    fake_llm.configure(mode="fail_n_then_ok", fail_n=failures, status=status)
    prompt = f"recovers after {failures} x {status}"
    cid = shared_stack.submit(prompt)
    row = shared_stack.settle([cid], timeout=20)[cid]
    assert row.status == "completed"
    assert row.attempts == failures + 1
    assert fake_llm.stats().calls_for(prompt) == failures + 1


@pytest.mark.parametrize(
    "behaviour",
    [{"mode": "close_mid_stream"}, {"mode": "slow", "delay_seconds": 3}],
    ids=["closed mid-stream", "slower than OLLAMA_TIMEOUT"],
)
def test_a_broken_answer_is_retried_once_the_llm_behaves_again(
    shared_stack: FaultStack, fake_llm: FakeLLMServer, behaviour: dict[str, Any]
) -> None:
    fake_llm.configure(**behaviour)
    prompt = f"broken once: {behaviour['mode']}"
    cid = shared_stack.submit(prompt)
    wait_for_calls(fake_llm, prompt, 1)
    fake_llm.configure(mode="ok", delay_seconds=0)
    row = shared_stack.settle([cid], timeout=20)[cid]
    assert row.status == "completed"
    assert row.response == f"echo: {prompt}"
    assert row.attempts == 2
    assert fake_llm.stats().calls_for(prompt) == 2


@pytest.mark.parametrize(
    ("behaviour", "code", "attempts"),
    [
        ({"mode": "garbage"}, "llm_bad_response", 1),
        ({"mode": "status", "status": 400}, "llm_bad_request", 1),
        ({"mode": "status", "status": 503}, "llm_unavailable", 3),
    ],
    ids=["garbage", "400", "503 for good"],
)
def test_an_llm_failure_that_does_not_recover_ends_failed_with_its_code(
    shared_stack: FaultStack,
    fake_llm: FakeLLMServer,
    behaviour: dict[str, Any],
    code: str,
    attempts: int,
) -> None:
    fake_llm.configure(**behaviour)
    prompt = f"never answered: {code}"
    cid = shared_stack.submit(prompt)
    row = shared_stack.settle([cid], timeout=20)[cid]
    assert row.status == "failed"
    assert row.error_code == code
    # A permanent error is not retried; a transient one until WORKER_MAX_ATTEMPTS (3).
    assert row.attempts == attempts
    assert fake_llm.stats().calls_for(prompt) == attempts
