"""Ollama down: the worker's start-up check speaks only when a model version sends work there,
and a conversation waiting on it says why and what to do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from arq import Retry
from loguru import logger
from pydantic import AnyHttpUrl

from shared.db import SessionFactory
from shared.models import ConversationStatus
from shared.models.model_version import ModelVersion
from shared.settings import Settings
from tests.factories import load, make_conversation
from worker.context import WorkerResources, check_llm, open_resources
from worker.generation import JobResult, run_generation
from worker.observability import Observability

# Nothing listens on port 1: Ollama is "down" at once, without a timeout to wait for.
NOWHERE = "http://127.0.0.1:1"
UNAVAILABLE = "llm_unavailable"


@pytest.fixture
async def res_without_ollama(
    worker_settings: Settings, session_factory: SessionFactory, observability: Observability
) -> AsyncIterator[WorkerResources]:
    settings = worker_settings.model_copy(
        update={"OLLAMA_BASE_URL": AnyHttpUrl(NOWHERE), "OLLAMA_STARTUP_CHECK_ENABLED": True}
    )
    resources = await open_resources(settings, observability)
    try:
        yield resources
    finally:
        await resources.close()


async def _logged_check(res: WorkerResources) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    handler = logger.add(
        lambda message: lines.append((message.record["level"].name, message.record["message"])),
        level="DEBUG",
    )
    try:
        await check_llm(res)
    finally:
        logger.remove(handler)
    return [line for line in lines if line[1].startswith("ollama")]


async def _register(session_factory: SessionFactory, provider: str, *, active: bool) -> None:
    async with session_factory() as session:
        session.add(
            ModelVersion(provider=provider, model_name="m", version_tag=provider, is_active=active)
        )
        await session.commit()


@pytest.mark.parametrize(
    ("registered", "logged"),
    [
        # `make run LLM=local`: an openai model (and a deleted ollama one) only, so Ollama
        # being absent is not worth a line above debug.
        ({"openai": True, "ollama": False}, ("DEBUG", "ollama_check_skipped")),
        ({"ollama": True}, ("WARNING", "ollama_not_ready")),
    ],
)
async def test_the_start_up_check_speaks_only_when_an_ollama_model_version_is_active(
    res_without_ollama: WorkerResources,
    session_factory: SessionFactory,
    registered: dict[str, bool],
    logged: tuple[str, str],
) -> None:
    for provider, active in registered.items():
        await _register(session_factory, provider, active=active)
    assert await _logged_check(res_without_ollama) == [logged]


async def test_a_conversation_waiting_on_a_down_ollama_says_why_and_what_to_do(
    res_without_ollama: WorkerResources, session_factory: SessionFactory
) -> None:
    """While it retries, the row shows the failure, the hint and the next attempt's time; the
    final failure keeps the hint the worker logs at start."""
    cid = await make_conversation(session_factory)
    for _ in range(res_without_ollama.settings.WORKER_MAX_ATTEMPTS - 1):
        with pytest.raises(Retry):
            await run_generation(res_without_ollama, cid)
        waiting = await load(session_factory, cid)
        assert (waiting.status, waiting.error_code) == (ConversationStatus.PENDING, UNAVAILABLE)
        assert "`make llm_up`" in (waiting.error_message or "")
        assert waiting.next_attempt_at is not None
    assert await run_generation(res_without_ollama, cid) is JobResult.FAILED
    failed = await load(session_factory, cid)
    assert (failed.status, failed.error_code) == (ConversationStatus.FAILED, UNAVAILABLE)
    assert failed.error_message == (
        f"ollama unreachable at {NOWHERE}/api/chat (ConnectError): is Ollama running? "
        "`make llm_up` starts one, or fix OLLAMA_BASE_URL"
    )
