"""The worker's start-up check of Ollama runs only when a model version sends work there."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from loguru import logger
from pydantic import AnyHttpUrl

from shared.db import SessionFactory
from shared.models.model_version import ModelVersion
from shared.settings import Settings
from worker.context import WorkerResources, check_llm, open_resources
from worker.observability import Observability

# Nothing listens on port 1: Ollama is "down" at once, without a timeout to wait for.
NOWHERE = "http://127.0.0.1:1"


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


async def test_no_ollama_model_version_no_check(
    res_without_ollama: WorkerResources, session_factory: SessionFactory
) -> None:
    """`make run LLM=local`: only an openai model (and a deleted ollama one) is registered, so
    Ollama being absent is not worth a line above debug."""
    await _register(session_factory, "openai", active=True)
    await _register(session_factory, "ollama", active=False)
    lines = await _logged_check(res_without_ollama)
    assert lines == [("DEBUG", "ollama_check_skipped")]


async def test_ollama_model_version_and_ollama_down_warns(
    res_without_ollama: WorkerResources, session_factory: SessionFactory
) -> None:
    await _register(session_factory, "ollama", active=True)
    lines = await _logged_check(res_without_ollama)
    assert lines == [("WARNING", "ollama_not_ready")]
