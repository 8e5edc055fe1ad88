"""The arq entry point: what becomes a deferred retry, what is dropped, what crashes loudly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import Retry
from sqlalchemy.engine import make_url

from shared.db import SessionFactory
from shared.settings import Settings
from tests.factories import load, make_conversation
from tests.support.fake_llm import FakeLLMServer
from worker import jobs
from worker.context import RESOURCES_KEY, WorkerResources, open_resources
from worker.generation import JobResult
from worker.jobs import DATABASE_RETRY_SECONDS, generate_conversation
from worker.observability import Observability


def _ctx(res: WorkerResources) -> dict[str, Any]:
    return {RESOURCES_KEY: res, "job_id": "conversation:test", "job_try": 1}


@pytest.fixture
async def res_without_database(
    worker_settings: Settings, observability: Observability
) -> AsyncIterator[WorkerResources]:
    """Worker resources whose database refuses every connection (nothing listens on port 1)."""
    url = make_url(worker_settings.DATABASE_URL or "").set(host="127.0.0.1", port=1)
    settings = worker_settings.model_copy(
        update={"DATABASE_URL": url.render_as_string(hide_password=False)}
    )
    resources = await open_resources(settings, observability)
    try:
        yield resources
    finally:
        await resources.close()


async def test_a_database_down_before_the_claim_defers_the_job(
    res_without_database: WorkerResources, fake_llm: FakeLLMServer
) -> None:
    """The claim cannot reach PostgreSQL: the job is kept and comes back in two seconds,
    rather than failing or crashing the worker, and the model is never asked."""
    with pytest.raises(Retry) as deferred:
        await generate_conversation(_ctx(res_without_database), str(uuid.uuid4()))
    assert deferred.value.defer_score == DATABASE_RETRY_SECONDS * 1000 == 2000
    assert fake_llm.stats().generation_calls == 0


async def test_a_job_runs_the_generation_and_returns_its_result(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    cid = await make_conversation(session_factory)
    assert await generate_conversation(_ctx(res), str(cid), {}) == "completed"
    assert (await load(session_factory, cid)).status == "completed"


async def test_a_retry_from_the_generation_is_passed_on_unchanged(
    res: WorkerResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    retry = Retry(defer=7)

    async def deferred(*_: object) -> JobResult:
        raise retry

    monkeypatch.setattr(jobs, "run_generation", deferred)
    with pytest.raises(Retry) as raised:
        await generate_conversation(_ctx(res), str(uuid.uuid4()))
    assert raised.value is retry


async def test_a_bug_is_raised_not_deferred(
    res: WorkerResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> JobResult:
        raise KeyError("a bug, not an outage")

    monkeypatch.setattr(jobs, "run_generation", broken)
    with pytest.raises(KeyError):
        await generate_conversation(_ctx(res), str(uuid.uuid4()))


@pytest.mark.parametrize("payload", ["not-a-uuid", None, 42])
async def test_a_malformed_payload_is_rejected_without_touching_anything(
    res_without_database: WorkerResources, fake_llm: FakeLLMServer, payload: object
) -> None:
    # A database that refuses connections proves nothing was even tried.
    assert await generate_conversation(_ctx(res_without_database), payload) == "rejected"
    assert fake_llm.stats().generation_calls == 0
