"""The job joins the trace the API started, and the model call is a GenAI span."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.db import SessionFactory
from shared.telemetry import inject_trace_context
from tests.factories import make_conversation
from tests.support.fake_llm import FakeLLMServer
from worker.context import RESOURCES_KEY, WorkerResources
from worker.jobs import generate_conversation


async def _run_job_under_a_producer_span(
    res: WorkerResources, conversation_id: str
) -> tuple[int, int]:
    producer = TracerProvider().get_tracer("test-api")
    with producer.start_as_current_span("enqueue", kind=SpanKind.PRODUCER) as span:
        carrier = inject_trace_context()
        context = span.get_span_context()
    ctx = {RESOURCES_KEY: res, "job_id": f"conversation:{conversation_id}"}
    await generate_conversation(ctx, conversation_id, carrier)
    return context.trace_id, context.span_id


async def test_job_and_llm_spans_continue_the_enqueue_trace(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    spans: InMemorySpanExporter,
) -> None:
    cid = await make_conversation(session_factory, prompt="secret prompt text", temperature=0.4)
    trace_id, parent_id = await _run_job_under_a_producer_span(res, str(cid))
    finished = {s.name: s for s in spans.get_finished_spans()}
    job = finished["generate_conversation process"]
    llm = finished["chat llama3.2:3b"]
    assert job.kind is SpanKind.CONSUMER
    assert job.context.trace_id == trace_id
    assert job.parent is not None
    assert job.parent.span_id == parent_id
    assert job.attributes is not None
    assert job.attributes["conversation.id"] == str(cid)
    assert llm.kind is SpanKind.CLIENT
    assert llm.context.trace_id == trace_id
    assert llm.parent is not None
    assert llm.parent.span_id == job.context.span_id
    attributes = dict(llm.attributes or {})
    assert attributes["gen_ai.system"] == "ollama"
    assert attributes["gen_ai.request.model"] == "llama3.2:3b"
    assert attributes["gen_ai.request.temperature"] == 0.4
    assert attributes["gen_ai.usage.output_tokens"] == 4
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    every_value = " ".join(str(v) for s in finished.values() for v in (s.attributes or {}).values())
    assert "secret prompt text" not in every_value
    http_spans = [s for s in finished.values() if s.name == "POST"]
    assert http_spans
    assert http_spans[0].parent is not None
    assert http_spans[0].parent.span_id == llm.context.span_id


async def test_a_failed_call_is_recorded_on_its_span(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    spans: InMemorySpanExporter,
) -> None:
    fake_llm.configure(mode="status", status=404)
    cid = await make_conversation(session_factory)
    await _run_job_under_a_producer_span(res, str(cid))
    llm = next(s for s in spans.get_finished_spans() if s.name.startswith("chat "))
    assert llm.status.status_code is StatusCode.ERROR
    assert dict(llm.attributes or {})["error.type"] == "llm_model_not_found"
    assert any(event.name == "exception" for event in llm.events)
