from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import AnyHttpUrl

from shared.db import SessionFactory
from shared.settings import Settings
from tests.support.fake_llm import FakeLLMServer
from worker.context import WorkerResources, open_resources


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLMServer) -> FakeLLMServer:
    fake_llm_server.reset()
    return fake_llm_server


@pytest.fixture
def worker_settings(settings: Settings, fake_llm_server: FakeLLMServer) -> Settings:
    """Short timeouts so failure paths take a second, not minutes."""
    return settings.model_copy(
        update={
            "OLLAMA_BASE_URL": AnyHttpUrl(fake_llm_server.url),
            "OLLAMA_TIMEOUT_SECONDS": 1.0,
            "WORKER_JOB_TIMEOUT_SECONDS": 5.0,
            "WORKER_LEASE_SECONDS": 10.0,
            "WORKER_MAX_ATTEMPTS": 3,
            "WORKER_RETRY_BASE_SECONDS": 0.05,
            "WORKER_RETRY_MAX_SECONDS": 0.2,
            "WORKER_SWEEP_PENDING_GRACE_SECONDS": 5.0,
        }
    )


@pytest.fixture
async def res(
    worker_settings: Settings, session_factory: SessionFactory
) -> AsyncIterator[WorkerResources]:
    resources = await open_resources(worker_settings)
    try:
        yield resources
    finally:
        await resources.close()
