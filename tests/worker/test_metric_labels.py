"""Model metrics are labelled by model version id, never by a model name (free text)."""

from __future__ import annotations

import uuid

from prometheus_client import generate_latest

from shared.db import SessionFactory
from shared.metrics import MODEL_VERSION_LABEL
from tests.factories import load, make_conversation
from tests.support.fake_llm import FakeLLMServer
from worker.context import WorkerResources
from worker.generation import JobResult, run_generation

MODEL_METRICS = ("conversations_completed_total", "llm_latency_seconds", "llm_tokens_total")


async def test_a_generation_is_counted_under_its_model_version_id(
    res: WorkerResources, session_factory: SessionFactory, fake_llm: FakeLLMServer
) -> None:
    # A name an admin may register, and the stand-in echoes back as the model it ran.
    model_name = f"any-name-{uuid.uuid4().hex}:latest"
    cid = await make_conversation(session_factory, model_name=model_name)
    assert await run_generation(res, cid) is JobResult.COMPLETED
    row = await load(session_factory, cid)
    model_version_id = str(row.model_version_id)

    registry = res.obs.metrics.registry
    assert model_name not in generate_latest(registry).decode()
    labelled = {MODEL_VERSION_LABEL: model_version_id}
    assert registry.get_sample_value("conversations_completed_total", labelled) == 1
    tokens = {"direction": "output", **labelled}
    assert registry.get_sample_value("llm_tokens_total", tokens) == row.output_tokens
    latency = {"provider": "ollama", **labelled}
    assert registry.get_sample_value("llm_latency_seconds_count", latency) == 1


def test_no_model_metric_has_a_model_name_label(res: WorkerResources) -> None:
    for family in res.obs.metrics.registry.collect():
        if family.name.removesuffix("_total") in {m.removesuffix("_total") for m in MODEL_METRICS}:
            for sample in family.samples:
                assert "model" not in sample.labels, sample
                assert MODEL_VERSION_LABEL in sample.labels, sample
