"""Spans and metrics of the worker: one consumer span per job, one GenAI span per model call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.job_contract import GENERATE_CONVERSATION
from shared.llm.base import GenerationRequest, GenerationResult, LLMError
from shared.metrics import Metrics
from shared.telemetry import Telemetry, extract_trace_context

_TRACER_NAME = "ai_eng_api.worker"


@dataclass(frozen=True, slots=True)
class Observability:
    telemetry: Telemetry
    metrics: Metrics
    # Made once: `get_tracer` is not cheap (the SDK's installs a warnings filter every call).
    _tracer: trace.Tracer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tracer = self.telemetry.tracer_provider.get_tracer(_TRACER_NAME)
        object.__setattr__(self, "_tracer", tracer)

    def tracer(self) -> trace.Tracer:
        return self._tracer


@contextmanager
def job_span(
    obs: Observability,
    *,
    trace_context: dict[str, str],
    queue_name: str,
    job_id: str | None,
    conversation_id: str,
) -> Iterator[Span]:
    """The job's span, a child of the API's enqueue span carried in the job payload."""
    with obs.tracer().start_as_current_span(
        f"{GENERATE_CONVERSATION} process",
        context=extract_trace_context(trace_context),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "arq",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue_name,
            "messaging.message.id": job_id or "",
            "conversation.id": conversation_id,
        },
    ) as span:
        yield span


@contextmanager
def llm_span(obs: Observability, provider: str, request: GenerationRequest) -> Iterator[Span]:
    """A GenAI client span; prompt and answer text are deliberately left off."""
    attributes: dict[str, str | int | float] = {
        "gen_ai.system": provider,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": request.model,
    }
    for key, value in (
        ("gen_ai.request.temperature", request.temperature),
        ("gen_ai.request.top_p", request.top_p),
        ("gen_ai.request.max_tokens", request.max_tokens),
    ):
        if value is not None:
            attributes[key] = value
    with obs.tracer().start_as_current_span(
        f"chat {request.model}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_llm_result(
    obs: Observability,
    span: Span,
    provider: str,
    result: GenerationResult,
    *,
    model_version_id: uuid.UUID,
) -> None:
    """Span attributes and metrics of one answer. The span names the model the server says it
    ran; the metrics are labelled by the model version id, which the registry bounds."""
    span.set_attribute("gen_ai.response.model", result.model)
    model_version = str(model_version_id)
    tokens = obs.metrics.llm_tokens_total
    if result.input_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
        tokens.labels("input", model_version).inc(result.input_tokens)
    if result.output_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
        tokens.labels("output", model_version).inc(result.output_tokens)
    if result.finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
    obs.metrics.llm_latency_seconds.labels(provider, model_version).observe(
        result.latency_ms / 1000
    )


def record_llm_error(span: Span, error: LLMError) -> None:
    span.record_exception(error)
    span.set_attribute("error.type", error.code)
    span.set_status(Status(StatusCode.ERROR, error.code))
