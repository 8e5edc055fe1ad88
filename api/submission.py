"""Hand a committed conversation to the queue, without ever losing it."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.exceptions import RedisError

from shared.job_contract import GENERATE_CONVERSATION, generation_job_id
from shared.queue import enqueue_generation
from shared.telemetry import inject_trace_context

_tracer = trace.get_tracer("ai_eng_api.api")


async def publish(queue: ArqRedis, conversation_id: uuid.UUID) -> bool:
    """Send the job. When Redis cannot take it the row stays committed as `pending` and the
    worker's sweeper queues it later, so the client's 202 stays true. Returns whether the job
    reached Redis."""
    log = logger.bind(conversation_id=str(conversation_id))
    with _tracer.start_as_current_span(
        f"{GENERATE_CONVERSATION} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "arq",
            "messaging.operation.type": "publish",
            "messaging.destination.name": queue.default_queue_name,
            "messaging.message.id": generation_job_id(conversation_id),
            "conversation.id": str(conversation_id),
        },
    ) as span:
        try:
            # Injected inside the producer span: the job's span becomes its child.
            queued = await enqueue_generation(
                queue, conversation_id, trace_context=inject_trace_context()
            )
        except (RedisError, OSError, TimeoutError) as exc:
            span.set_status(Status(StatusCode.ERROR, "enqueue failed"))
            span.set_attribute("error.type", type(exc).__name__)
            log.warning("enqueue_failed", error=type(exc).__name__)
            return False
    # Debug: the request's own access line already says it was accepted.
    log.debug("conversation_enqueued" if queued else "conversation_already_queued")
    return True
