"""`publish`: the job sent to the real Redis under a producer span, or the failure recorded.

What a trace backend and the logs show of a submission's hand-off, and whether the caller
learns the job reached Redis.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from arq.connections import ArqRedis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api import submission
from shared.job_contract import generation_job_id
from shared.queue import create_queue_pool
from shared.settings import Settings
from tests.support.log_capture import LogCapture, captured_logging


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(submission, "_tracer", provider.get_tracer("test"))
    return exporter


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    with captured_logging(LOG_LEVEL="DEBUG") as capture:
        yield capture


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = create_queue_pool(settings)
    yield pool
    await pool.aclose()


@pytest.fixture
async def unreachable(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = create_queue_pool(settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    yield pool
    await pool.aclose()


def _only(spans: InMemorySpanExporter) -> ReadableSpan:
    (span,) = spans.get_finished_spans()
    return span


def _producer_attributes(queue: ArqRedis, cid: uuid.UUID) -> dict[str, str]:
    return {
        "messaging.system": "arq",
        "messaging.operation.type": "publish",
        "messaging.destination.name": queue.default_queue_name,
        "messaging.message.id": generation_job_id(cid),
        "conversation.id": str(cid),
    }


async def test_a_published_job_is_a_producer_span_the_job_continues(
    queue: ArqRedis, spans: InMemorySpanExporter, logs: LogCapture
) -> None:
    cid = uuid.uuid4()
    job_key = f"arq:job:{generation_job_id(cid)}"
    try:
        assert await submission.publish(queue, cid) is True
        span = _only(spans)
        assert span.name == "generate_conversation publish"
        assert span.kind is SpanKind.PRODUCER
        assert dict(span.attributes or {}) == _producer_attributes(queue, cid)
        assert span.status.status_code is StatusCode.UNSET
        # The job carries this span as its parent.
        raw = await queue.get(job_key)
        assert raw is not None
        carrier = json.loads(raw)["a"][1]
        trace_id = format(span.context.trace_id, "032x")
        span_id = format(span.context.span_id, "016x")
        assert carrier["traceparent"].split("-")[1:3] == [trace_id, span_id]
        (line,) = [r for r in logs.records() if r["message"].startswith("conversation_")]
        assert (line["message"], line["level"]) == ("conversation_enqueued", "DEBUG")
        assert line["conversation_id"] == str(cid)
    finally:
        await queue.delete(job_key)
        await queue.zrem(queue.default_queue_name, generation_job_id(cid))


async def test_publishing_a_job_already_queued_reached_redis_and_says_so(
    queue: ArqRedis, spans: InMemorySpanExporter, logs: LogCapture
) -> None:
    cid = uuid.uuid4()
    try:
        assert await submission.publish(queue, cid) is True
        assert await submission.publish(queue, cid) is True
        assert await queue.zcard(queue.default_queue_name) >= 1
        lines = [r for r in logs.records() if r["message"].startswith("conversation_")]
        assert [(r["message"], r["conversation_id"]) for r in lines] == [
            ("conversation_enqueued", str(cid)),
            ("conversation_already_queued", str(cid)),
        ]
        assert [s.status.status_code for s in spans.get_finished_spans()] == [StatusCode.UNSET] * 2
    finally:
        await queue.delete(f"arq:job:{generation_job_id(cid)}")
        await queue.zrem(queue.default_queue_name, generation_job_id(cid))


async def test_a_publish_redis_refuses_is_an_error_span_and_a_warning_and_returns_false(
    unreachable: ArqRedis, spans: InMemorySpanExporter, logs: LogCapture
) -> None:
    cid = uuid.uuid4()
    assert await submission.publish(unreachable, cid) is False
    span = _only(spans)
    assert span.name == "generate_conversation publish"
    assert span.kind is SpanKind.PRODUCER
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "enqueue failed"
    assert dict(span.attributes or {}) == {
        **_producer_attributes(unreachable, cid),
        "error.type": "ConnectionError",
    }
    (line,) = logs.find("enqueue_failed")
    assert line["level"] == "WARNING"
    assert line["conversation_id"] == str(cid)
    assert line["extra"] == {"error": "ConnectionError"}
    assert [r for r in logs.records() if r["message"].startswith("conversation_")] == []
