"""One attempt, end to end inside the process: real PostgreSQL, real HTTP to the stand-in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from arq import Retry

from shared.db import SessionFactory, unit_of_work
from shared.model_servers import server_label
from shared.models import Conversation, ConversationStatus
from shared.repositories.conversations import ConversationRepository
from shared.services.conversations import cancel_conversation, delete_conversation
from tests.factories import load, make_conversation, set_columns
from tests.support.fake_llm import FakeLLMServer
from tests.support.log_capture import captured_logging
from worker.context import WorkerResources
from worker.generation import JobResult, run_generation


async def test_success_writes_answer_tokens_and_timings(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    cid = await make_conversation(
        session_factory, prompt="hello there", system_instruction="be brief", context="facts"
    )
    assert await run_generation(res, cid) is JobResult.COMPLETED
    row = await load(session_factory, cid)
    assert row.status == ConversationStatus.COMPLETED
    assert row.response == "echo: hello there"
    assert row.input_tokens is not None
    assert row.input_tokens > 0
    assert row.output_tokens == 3
    assert row.total_tokens == row.input_tokens + row.output_tokens
    assert row.latency_ms is not None
    assert row.latency_ms > 0
    assert row.queue_wait_ms is not None
    assert row.started_at is not None
    # Measured by the claim, from the row's creation to the moment the attempt started.
    waited_ms = (row.started_at - row.created_at).total_seconds() * 1000
    assert row.queue_wait_ms == pytest.approx(waited_ms, abs=0.01)
    assert row.attempts == 1
    assert row.prompt_version == "v1"
    assert row.finish_reason == "stop"
    assert row.started_at is not None
    assert row.completed_at is not None
    assert row.lease_expires_at is None
    assert row.error_code is None
    body = fake_llm.stats().last_body
    assert body is not None
    system, user = body["messages"]
    assert system["role"] == "system"
    assert system["content"].index("helpful") < system["content"].index("be brief")
    assert system["content"].index("be brief") < system["content"].index("Context:\nfacts")
    assert user == {"role": "user", "content": "hello there"}


async def test_a_provider_the_worker_has_no_client_for_fails_at_once_with_its_name(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    assert not res.servers.serves("elsewhere")
    cid = await make_conversation(session_factory, provider="elsewhere")
    assert await run_generation(res, cid) is JobResult.FAILED
    row = await load(session_factory, cid)
    assert (row.status, row.error_code, row.error_message, row.attempts) == (
        ConversationStatus.FAILED,
        "provider_unsupported",
        "no worker client for provider 'elsewhere'",
        1,
    )
    assert fake_llm.stats().generation_calls == 0


async def test_a_claim_past_the_last_attempt_fails_without_calling_the_model(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    """A job delivered once more after every attempt was spent (its last worker vanished
    after the sweeper's check): the claim counts it, the attempt only says why it stops."""
    spent = res.settings.WORKER_MAX_ATTEMPTS
    cid = await make_conversation(session_factory)
    await set_columns(session_factory, cid, attempts=spent)
    assert await run_generation(res, cid) is JobResult.FAILED
    row = await load(session_factory, cid)
    assert (row.status, row.error_code, row.error_message) == (
        ConversationStatus.FAILED,
        "max_attempts_exceeded",
        f"gave up after {spent} attempts",
    )
    assert fake_llm.stats().generation_calls == 0


class _BrokenClient:
    """A client with a bug: it raises what no LLM error classification knows."""

    provider = "ollama"

    async def generate(self, request: object, on_text: object = None) -> None:
        raise ZeroDivisionError("a bug in the client")

    async def list_models(self) -> list[str]:
        return []


async def test_a_bug_in_the_attempt_fails_the_row_with_a_reason_and_logs_the_traceback(
    res: WorkerResources, session_factory: SessionFactory
) -> None:
    res.servers.by_provider["ollama"][0].client = _BrokenClient()
    cid = await make_conversation(session_factory)
    with captured_logging("worker") as logs:
        assert await run_generation(res, cid) is JobResult.FAILED
    row = await load(session_factory, cid)
    assert (row.status, row.error_code, row.error_message, row.attempts) == (
        ConversationStatus.FAILED,
        "internal_error",
        "unexpected ZeroDivisionError",
        1,
    )
    (crash,) = logs.find("generation_crashed")
    assert crash["level"] == "ERROR"
    assert "ZeroDivisionError: a bug in the client" in crash["exception"]


async def test_the_start_of_an_attempt_is_logged_with_its_queue_wait(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    cid = await make_conversation(session_factory)
    with captured_logging("worker") as logs:
        assert await run_generation(res, cid) is JobResult.COMPLETED
    row = await load(session_factory, cid)
    (started,) = logs.find("generation_started")
    assert started["extra"] == {"queue_wait_ms": row.queue_wait_ms, "attempt": "1"}


async def test_model_bounds_cap_the_request(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    cid = await make_conversation(
        session_factory,
        max_tokens=100,
        top_p=0.5,
        model_options={"max_tokens_cap": 8, "default_temperature": 0.3},
    )
    await run_generation(res, cid)
    body = fake_llm.stats().last_body
    assert body is not None
    assert body["options"] == {"num_predict": 8, "temperature": 0.3, "top_p": 0.5}


async def test_a_request_naming_no_max_tokens_is_bounded_by_the_global_limit(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    cid = await make_conversation(session_factory)
    await run_generation(res, cid)
    body = fake_llm.stats().last_body
    assert body is not None
    assert body["options"]["num_predict"] == res.settings.MAX_TOKENS_LIMIT


async def test_the_global_limit_caps_an_older_row_that_asked_for_more(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    cid = await make_conversation(session_factory, max_tokens=res.settings.MAX_TOKENS_LIMIT + 500)
    await run_generation(res, cid)
    body = fake_llm.stats().last_body
    assert body is not None
    assert body["options"]["num_predict"] == res.settings.MAX_TOKENS_LIMIT


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "llm_model_not_found"), (400, "llm_bad_request")],
)
async def test_permanent_errors_fail_at_once(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    status: int,
    code: str,
) -> None:
    fake_llm.configure(mode="status", status=status)
    cid = await make_conversation(session_factory)
    assert await run_generation(res, cid) is JobResult.FAILED
    row = await load(session_factory, cid)
    assert row.status == ConversationStatus.FAILED
    assert row.error_code == code
    assert row.error_message
    assert row.attempts == 1
    assert fake_llm.stats().generation_calls == 1


async def test_garbage_is_a_bad_response(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="garbage")
    cid = await make_conversation(session_factory)
    assert await run_generation(res, cid) is JobResult.FAILED
    assert (await load(session_factory, cid)).error_code == "llm_bad_response"


async def test_transient_error_schedules_a_retry_then_succeeds(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="fail_n_then_ok", fail_n=1, status=503)
    cid = await make_conversation(session_factory)
    with pytest.raises(Retry):
        await run_generation(res, cid)
    row = await load(session_factory, cid)
    assert row.status == ConversationStatus.PENDING
    assert row.error_code == "llm_unavailable"
    assert row.next_attempt_at is not None
    assert row.lease_expires_at is None
    assert await run_generation(res, cid) is JobResult.COMPLETED
    row = await load(session_factory, cid)
    assert row.attempts == 2
    assert row.error_code is None
    assert fake_llm.stats().generation_calls == 2


async def test_transient_errors_fail_after_the_last_attempt(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="status", status=500)
    cid = await make_conversation(session_factory)
    for _ in range(res.settings.WORKER_MAX_ATTEMPTS - 1):
        with pytest.raises(Retry):
            await run_generation(res, cid)
    assert await run_generation(res, cid) is JobResult.FAILED
    row = await load(session_factory, cid)
    assert row.status == ConversationStatus.FAILED
    assert row.error_code == "llm_unavailable"
    assert row.attempts == res.settings.WORKER_MAX_ATTEMPTS


async def test_a_call_slower_than_the_timeout_is_retried(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=3)
    cid = await make_conversation(session_factory)
    with pytest.raises(Retry):
        await run_generation(res, cid)
    row = await load(session_factory, cid)
    assert row.error_code == "llm_unavailable"
    assert row.status == ConversationStatus.PENDING


async def test_a_model_that_drips_its_answer_past_the_llm_timeout_is_cut_off(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    """Each byte arrives long before httpx's per-read timeout, but the whole answer would take
    seconds: the whole-call timeout ends it at LLM_TIMEOUT_SECONDS, as a retriable error."""
    fake_llm.configure(drip_seconds=0.01)  # ~350 bytes: several times the 1 s LLM timeout
    cid = await make_conversation(session_factory)
    with pytest.raises(Retry):
        await run_generation(res, cid)
    row = await load(session_factory, cid)
    assert row.status == ConversationStatus.PENDING
    assert row.error_code == "llm_unavailable"
    # The whole-call timeout's words, not httpx's read timeout ("did not answer in time").
    assert row.error_message == "no answer within 1s"
    assert row.response is None
    assert fake_llm.stats().generation_calls == 1


async def test_a_finished_conversation_is_not_generated_again(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    cid = await make_conversation(session_factory)
    assert await run_generation(res, cid) is JobResult.COMPLETED
    with captured_logging("worker") as logs:
        assert await run_generation(res, cid) is JobResult.SKIPPED
    assert fake_llm.stats().generation_calls == 1
    assert [r["extra"] for r in logs.find("job_skipped")] == [{"reason": "finished_or_deleted"}]


async def test_a_row_leased_elsewhere_is_deferred_not_generated(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    cid = await make_conversation(session_factory)
    async with unit_of_work(session_factory) as session:
        held = await ConversationRepository(session).claim(cid, lease_seconds=30)
    assert held is not None
    assert held.lease_expires_at is not None
    before = datetime.now(UTC)
    with captured_logging("worker") as logs, pytest.raises(Retry) as deferred:
        await run_generation(res, cid)
    after = datetime.now(UTC)
    # The log says why and for how long, to the tenth of a second arq was given.
    (line,) = logs.find("job_deferred")
    assert deferred.value.defer_score is not None
    assert line["extra"]["reason"] == "leased_elsewhere"
    assert line["extra"]["defer_seconds"] == pytest.approx(
        deferred.value.defer_score / 1000, abs=0.051
    )
    assert round(line["extra"]["defer_seconds"], 1) == line["extra"]["defer_seconds"]
    # Back one second after the other worker's lease runs out, whenever that is.
    assert deferred.value.defer_score is not None
    defer = timedelta(milliseconds=deferred.value.defer_score - 1000)
    slack = timedelta(milliseconds=1)  # arq rounds the delay to whole milliseconds
    assert held.lease_expires_at - after - slack <= defer <= held.lease_expires_at - before + slack
    assert fake_llm.stats().generation_calls == 0


async def test_concurrent_duplicate_delivery_generates_once(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(hold=True)
    cid = await make_conversation(session_factory)
    copies = {asyncio.create_task(run_generation(res, cid)) for _ in range(2)}
    await _in_flight(fake_llm)
    # While the one that claimed the row waits on the model, the other is deferred.
    done, _ = await asyncio.wait(copies, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    (deferred,) = done
    assert isinstance(deferred.exception(), Retry)
    fake_llm.release(1)
    (claimed,) = copies - done
    assert await claimed is JobResult.COMPLETED
    assert fake_llm.stats().generation_calls == 1


async def _in_flight(fake_llm: FakeLLMServer, calls: int = 1) -> None:
    """Until the held stand-in has received `calls` generation calls (an event, not a clock)."""
    async with asyncio.timeout(10):
        while fake_llm.stats().generation_calls < calls:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("end", ["cancel", "delete"])
async def test_a_conversation_ended_while_it_generates_keeps_no_late_answer(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer, end: str
) -> None:
    fake_llm.configure(hold=True)
    cid = await make_conversation(session_factory)
    task = asyncio.create_task(run_generation(res, cid))
    await _in_flight(fake_llm)
    async with unit_of_work(session_factory) as session:
        if end == "cancel":
            await cancel_conversation(session, conversation_id=cid, owner_id=None)
        else:
            await delete_conversation(session, conversation_id=cid, owner_id=None)
    fake_llm.configure(hold=False)
    assert await task is JobResult.LEASE_LOST
    async with session_factory() as session:
        row = await session.get(Conversation, cid)
    assert row is not None
    assert row.status == ConversationStatus.CANCELLED
    assert row.response is None
    # Nothing brings it back: the sweeper finds no pending row to queue.
    async with unit_of_work(session_factory) as session:
        due = await ConversationRepository(session).due_pending_ids(
            older_than_seconds=-3600, limit=10
        )
    assert cid not in due


async def test_a_stale_attempt_stopped_at_shutdown_does_not_hand_back_the_newer_attempts_row(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    """Attempt 1 lost its lease and attempt 2 holds the row when attempt 1's worker shuts
    down: its hand-back is fenced by its attempt number like every other write."""
    fake_llm.configure(hold=True)
    cid = await make_conversation(session_factory)
    first = asyncio.create_task(run_generation(res, cid))
    await _in_flight(fake_llm)
    await set_columns(session_factory, cid, lease_expires_at=datetime.now(UTC) - timedelta(1))
    second = asyncio.create_task(run_generation(res, cid))
    await _in_flight(fake_llm, calls=2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    running = await load(session_factory, cid)
    assert (running.status, running.attempts) == ("running", 2)
    assert running.lease_expires_at is not None
    fake_llm.configure(hold=False)
    assert await second is JobResult.COMPLETED
    assert (await load(session_factory, cid)).attempts == 2


async def test_a_stale_attempt_that_finishes_late_is_discarded(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    """Attempt 1 loses its lease and attempt 2 takes the row; attempt 1's answer, arriving
    while attempt 2 runs, must not land (the attempt number fences every write)."""
    fake_llm.configure(hold=True, reply="stale answer")
    cid = await make_conversation(session_factory)
    first = asyncio.create_task(run_generation(res, cid))
    await _in_flight(fake_llm)
    await set_columns(session_factory, cid, lease_expires_at=datetime.now(UTC) - timedelta(1))
    fake_llm.configure(reply="fresh answer")
    second = asyncio.create_task(run_generation(res, cid))
    await _in_flight(fake_llm, calls=2)
    with captured_logging("worker") as logs:
        fake_llm.release(1)  # attempt 1 answers first, while attempt 2 holds the row
        assert await first is JobResult.LEASE_LOST
    assert [(r["level"], r["extra"]) for r in logs.find("result_discarded")] == [
        ("WARNING", {"reason": "lease_lost_or_cancelled", "attempt": "1"})
    ]
    running = await load(session_factory, cid)
    assert (running.status, running.attempts, running.response) == ("running", 2, None)
    fake_llm.release(1)
    assert await second is JobResult.COMPLETED
    row = await load(session_factory, cid)
    assert (row.attempts, row.response) == (2, "fresh answer")


async def test_a_call_that_failed_at_the_server_is_counted_against_it(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    registry = res.obs.metrics.registry
    server = {"provider": "ollama", "server": server_label(fake_llm.url)}

    def errors(code: str) -> float:
        labels = {**server, "code": code}
        return registry.get_sample_value("model_server_errors_total", labels) or 0.0

    before = errors("llm_bad_response")
    fake_llm.configure(mode="garbage")
    assert await run_generation(res, await make_conversation(session_factory)) is JobResult.FAILED
    assert errors("llm_bad_response") == before + 1
