"""The submission path: check, store (committed), hand to the queue, answer.

`POST /conversations` is most of the API's write traffic; everything it does after parsing the
body is here, in the order it happens, with what it needs built once per process.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass

from arq.connections import ArqRedis
from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.limits import SubmissionLimiter, check_submission_sizes
from shared.job_contract import GENERATE_CONVERSATION, generation_job_id
from shared.metrics import Metrics
from shared.models import Priority
from shared.queue import Placement, enqueue_generation, placement_for
from shared.schemas.conversations import ConversationCreate, ConversationRead
from shared.services import conversations as service
from shared.settings import Settings
from shared.telemetry import current_trace_id, inject_trace_context

_tracer = trace.get_tracer("ai_eng_api.api")


@dataclass(frozen=True, slots=True)
class Submission:
    """What a submission answers: the conversation, whether it went to the queue (202) or
    was stored answered (201), and whether an idempotency key replayed it."""

    conversation: ConversationRead
    queued: bool
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Submissions:
    """What a submission needs, built once in the lifespan."""

    settings: Settings
    engine: AsyncEngine
    queue: ArqRedis
    limiter: SubmissionLimiter
    metrics: Metrics
    providers: Collection[str]  # the providers this deployment's workers generate with

    async def submit(
        self,
        data: ConversationCreate,
        *,
        owner: uuid.UUID,
        limited: bool,
        idempotency_key: str | None = None,
        ceiling: Priority = Priority.INTERACTIVE,
    ) -> Submission:
        """Store the conversation for `owner` and, unless it came with its answer, queue it.

        `limited`: a user's own submission, held to the per-user rate and cap (the admin's
        is not). The job is sent only once the row is committed, so a worker that picks it up
        at once finds the row; a job Redis cannot take is sent by the sweeper later. A retry
        under the same `idempotency_key` gets the conversation back and queues nothing.
        A priority above the key's `ceiling` is lowered to it.
        """
        check_submission_sizes(data, self.settings)
        if data.priority.at_most(ceiling) is not data.priority:
            data = data.model_copy(update={"priority": ceiling})
        generate = data.response is None
        if generate and limited:
            await self.limiter.check_rate(owner)
        if generate:
            await self.limiter.check_queue_depth()
        stored = await service.create_conversation(
            self.engine,
            data=data,
            user_id=owner,
            supported_providers=self.providers,
            trace_id=current_trace_id(),
            max_active=self.settings.MAX_ACTIVE_CONVERSATIONS_PER_USER if limited else None,
            idempotency_key=idempotency_key,
        )
        conversation = ConversationRead.model_validate(stored.row)
        if stored.replayed:
            return Submission(conversation, queued=generate, replayed=True)
        if generate:
            place = placement_for(
                conversation.user_id,
                conversation.priority,
                stored.provider,
                settings=self.settings,
                weight=stored.queue_weight,
            )
            await publish(self.queue, conversation.id, place)
        self.metrics.conversations_submitted_total.labels("queued" if generate else "stored").inc()
        return Submission(conversation, queued=generate)

    def location(self, conversation_id: uuid.UUID) -> str:
        """Where to poll. Never from the Host header: a forged host would turn the link into
        someone else's."""
        path = f"/conversations/{conversation_id}"
        if self.settings.PUBLIC_BASE_URL is None:
            return path
        return str(self.settings.PUBLIC_BASE_URL).rstrip("/") + path


async def publish(
    queue: ArqRedis, conversation_id: uuid.UUID, placement: Placement | None = None
) -> bool:
    """Send the job. When Redis cannot take it the row stays committed as `pending` and the
    worker's sweeper queues it later, so the client's 202 stays true. Returns whether the job
    reached Redis."""
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
                queue, conversation_id, trace_context=inject_trace_context(), placement=placement
            )
        except (RedisError, OSError, TimeoutError) as exc:
            span.set_status(Status(StatusCode.ERROR, "enqueue failed"))
            span.set_attribute("error.type", type(exc).__name__)
            logger.warning(
                "enqueue_failed", conversation_id=str(conversation_id), error=type(exc).__name__
            )
            return False
    # Debug: the request's own access line already says it was accepted.
    logger.debug(
        "conversation_enqueued" if queued else "conversation_already_queued",
        conversation_id=str(conversation_id),
    )
    return True
