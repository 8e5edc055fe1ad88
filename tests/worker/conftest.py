from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import AnyHttpUrl

from shared.db import SessionFactory
from shared.metrics import create_metrics
from shared.settings import Settings
from shared.telemetry import setup_telemetry
from tests.support.fake_llm import FakeLLMServer
from worker.context import WorkerResources, open_resources
from worker.observability import Observability

SPANS = InMemorySpanExporter()


@pytest.fixture
def worker_settings(settings: Settings, fake_llm_server: FakeLLMServer) -> Settings:
    """Short timeouts so failure paths take a second, not minutes."""
    return settings.model_copy(
        update={
            "OLLAMA_BASE_URL": AnyHttpUrl(fake_llm_server.url),
            "LLM_TIMEOUT_SECONDS": 1.0,
            "WORKER_JOB_TIMEOUT_SECONDS": 5.0,
            "WORKER_LEASE_SECONDS": 10.0,
            "WORKER_MAX_ATTEMPTS": 3,
            "WORKER_RETRY_BASE_SECONDS": 0.05,
            "WORKER_RETRY_MAX_SECONDS": 0.2,
            "WORKER_SWEEP_PENDING_GRACE_SECONDS": 5.0,
        }
    )


@pytest.fixture(scope="session")
def observability() -> Observability:
    telemetry = setup_telemetry(
        Settings(_env_file=None),  # type: ignore[call-arg]
        process_name="worker",
        span_exporter=SPANS,
        set_global=False,
    )
    return Observability(telemetry=telemetry, metrics=create_metrics(process_metrics=False))


@pytest.fixture
def spans(observability: Observability) -> InMemorySpanExporter:
    SPANS.clear()
    return SPANS


@pytest.fixture
async def res(
    worker_settings: Settings, session_factory: SessionFactory, observability: Observability
) -> AsyncIterator[WorkerResources]:
    resources = await open_resources(worker_settings, observability)
    try:
        yield resources
    finally:
        await resources.close()
