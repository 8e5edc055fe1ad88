"""What a written outcome leaves for operators: one count and one log line, each under the
outcome's own name, with the numbers the row holds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from arq import Retry

from shared.db import SessionFactory
from shared.metrics import MODEL_VERSION_LABEL
from tests.factories import load, make_conversation
from tests.support.fake_llm import FakeLLMServer
from tests.support.log_capture import LogCapture, captured_logging
from worker import generation
from worker.context import WorkerResources
from worker.generation import JobResult, run_generation

OUTCOME_LINES = ("generation_completed", "generation_failed", "generation_retry_scheduled")


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    with captured_logging("worker") as capture:
        yield capture


class _Counts:
    """The outcome counters, read before and after one attempt."""

    def __init__(self, res: WorkerResources, model_version_id: str, error_code: str) -> None:
        self._registry = res.obs.metrics.registry
        self._labels = {
            "conversations_completed_total": {MODEL_VERSION_LABEL: model_version_id},
            "conversations_failed_total": {"error_code": error_code},
            "job_retries_total": {"error_code": error_code},
        }
        self._before = self._read()

    def _read(self) -> dict[str, float]:
        return {
            name: self._registry.get_sample_value(name, labels) or 0.0
            for name, labels in self._labels.items()
        }

    def added(self) -> dict[str, float]:
        after = self._read()
        added = {name: after[name] - self._before[name] for name in after}
        return {name: count for name, count in added.items() if count}


def _outcome_lines(logs: LogCapture) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (r["message"], r["level"], r["extra"])
        for r in logs.records()
        if r["message"] in OUTCOME_LINES
    ]


async def test_a_completion_is_counted_for_its_model_version_and_logged_with_its_numbers(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    logs: LogCapture,
) -> None:
    cid = await make_conversation(session_factory)
    model_version_id = str((await load(session_factory, cid)).model_version_id)
    counts = _Counts(res, model_version_id, error_code="none")
    assert await run_generation(res, cid) is JobResult.COMPLETED
    row = await load(session_factory, cid)
    assert counts.added() == {"conversations_completed_total": 1}
    assert _outcome_lines(logs) == [
        (
            "generation_completed",
            "INFO",
            {
                "latency_ms": row.latency_ms,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "attempt": "1",
            },
        )
    ]


def _queue_wait(res: WorkerResources) -> tuple[float, float]:
    registry = res.obs.metrics.registry
    count = registry.get_sample_value("queue_wait_seconds_count") or 0.0
    total = registry.get_sample_value("queue_wait_seconds_sum") or 0.0
    return count, total


async def test_the_queue_wait_is_observed_once_in_seconds_on_the_first_attempt_only(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(generation, "retry_delay", lambda *_, **__: 0.01)
    fake_llm.configure(mode="fail_n_then_ok", fail_n=1, status=503)
    cid = await make_conversation(session_factory)
    count, total = _queue_wait(res)
    with pytest.raises(Retry):
        await run_generation(res, cid)
    waited = (await load(session_factory, cid)).queue_wait_ms
    assert waited is not None
    after_first = _queue_wait(res)
    assert after_first[0] == count + 1
    assert after_first[1] - total == pytest.approx(waited / 1000)
    assert await run_generation(res, cid) is JobResult.COMPLETED
    assert _queue_wait(res) == after_first


async def test_a_failure_is_counted_under_its_error_code_and_logged_as_a_warning(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    logs: LogCapture,
) -> None:
    fake_llm.configure(mode="status", status=404)
    model_name = f"gone-{uuid.uuid4().hex}"
    cid = await make_conversation(session_factory, model_name=model_name)
    model_version_id = str((await load(session_factory, cid)).model_version_id)
    counts = _Counts(res, model_version_id, error_code="llm_model_not_found")
    assert await run_generation(res, cid) is JobResult.FAILED
    assert counts.added() == {"conversations_failed_total": 1}
    assert _outcome_lines(logs) == [
        ("generation_failed", "WARNING", {"error_code": "llm_model_not_found", "attempt": "1"})
    ]


async def test_a_retry_is_counted_as_a_retry_not_a_failure_and_logged_with_its_delay(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    logs: LogCapture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A delay of known digits: the log rounds it to hundredths, the job is deferred by all.
    monkeypatch.setattr(generation, "retry_delay", lambda *_, **__: 0.123456)
    fake_llm.configure(mode="status", status=503)
    cid = await make_conversation(session_factory)
    model_version_id = str((await load(session_factory, cid)).model_version_id)
    counts = _Counts(res, model_version_id, error_code="llm_unavailable")
    with pytest.raises(Retry) as retry:
        await run_generation(res, cid)
    assert retry.value.defer_score == 123
    assert counts.added() == {"job_retries_total": 1}
    assert _outcome_lines(logs) == [
        (
            "generation_retry_scheduled",
            "WARNING",
            {"error_code": "llm_unavailable", "delay_seconds": 0.12, "attempt": "1"},
        )
    ]
