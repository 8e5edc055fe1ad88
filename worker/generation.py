"""One generation attempt: claim the row, stream the model's answer, write the outcome back.

PostgreSQL is the source of truth and the queue only a trigger: every decision here is
made from the row, and every write is fenced by the attempt number the claim handed out.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from enum import StrEnum

import httpx
from arq import Retry
from loguru import logger
from redis.exceptions import RedisError

from shared.db import driver_connection, unit_of_work
from shared.lifecycle import Outcome
from shared.llm.base import (
    GenerationRequest,
    GenerationResult,
    LLMClient,
    LLMError,
    LLMUnavailableError,
    TextSink,
)
from shared.llm.prompts import PROMPT_VERSION, build_messages
from shared.logs import bind_context
from shared.models import ConversationStatus
from shared.repositories import attempt_statements
from shared.repositories.attempt_statements import ClaimedConversation, ClaimedModel, ClaimRefused
from shared.repositories.conversations import ConversationRepository
from worker.backoff import retry_delay
from worker.context import WorkerResources
from worker.delta_publisher import DeltaPublisher, announce_end, publishing
from worker.model_servers import Slot
from worker.observability import llm_span, record_llm_error, record_llm_result
from worker.persistence import write_outcome
from worker.webhook_delivery import schedule_webhook


class JobResult(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    SKIPPED = "skipped"
    LEASE_LOST = "lease_lost"
    CANCELLED = "cancelled"


class _Claimed:
    """A claimed attempt: the row as the claim left it, and the model it asks for."""

    def __init__(self, conversation: ClaimedConversation, model_version: ClaimedModel) -> None:
        self.conversation = conversation
        self.model_version = model_version
        self.attempt = conversation.attempts


async def _claim(res: WorkerResources, conversation_id: uuid.UUID) -> _Claimed | None:
    """Claim the row (one statement), or decide what to do when it cannot be claimed now."""
    async with driver_connection(res.engine) as db:
        claimed = await attempt_statements.claim(
            db, conversation_id, lease_seconds=res.settings.WORKER_LEASE_SECONDS
        )
    if not isinstance(claimed, ClaimRefused):
        return _Claimed(*claimed)
    if claimed.status is None or ConversationStatus(claimed.status).is_terminal:
        logger.info("job_skipped", reason="finished_or_deleted")
        return None
    # Another worker holds a live lease (a duplicate delivery, or a worker that may have
    # died). Come back when the lease runs out: by then it is finished or reclaimable.
    remaining = 1.0
    if claimed.lease_expires_at is not None:
        remaining = max((claimed.lease_expires_at - datetime.now(UTC)).total_seconds(), 0) + 1
    logger.info("job_deferred", reason="leased_elsewhere", defer_seconds=round(remaining, 1))
    raise Retry(defer=remaining)


def _request(claimed: _Claimed, *, max_tokens_limit: int) -> GenerationRequest:
    conversation, model_version = claimed.conversation, claimed.model_version
    # Every generation is bounded: by what was asked, the model's cap and the global limit
    # (a conversation that names no number gets the tightest cap that applies).
    caps = [max_tokens_limit]
    if model_version.max_tokens_cap is not None:
        caps.append(model_version.max_tokens_cap)
    max_tokens = min(conversation.max_tokens or min(caps), *caps)
    temperature = conversation.temperature
    if temperature is None:
        temperature = model_version.default_temperature
    return GenerationRequest(
        model=model_version.model_name,
        messages=build_messages(
            prompt=conversation.prompt,
            system_instruction=conversation.system_instruction,
            context=conversation.context,
        ),
        temperature=temperature,
        top_p=conversation.top_p,
        max_tokens=max_tokens,
    )


async def _generate(res: WorkerResources, claimed: _Claimed, on_text: TextSink) -> GenerationResult:
    """Call a server of the conversation's provider, holding one of its slots; a server that
    refuses the connection is set aside and the next one tried, within this attempt."""
    provider = claimed.model_version.provider
    if not res.servers.serves(provider):
        raise _PermanentError("provider_unsupported", f"no worker client for provider '{provider}'")
    request = _request(claimed, max_tokens_limit=res.settings.MAX_TOKENS_LIMIT)
    refused: frozenset[str] = frozenset()
    while True:
        slot = await _take_slot(res, provider, refused)
        try:
            return await _call(res, claimed, slot.server.client, request, on_text)
        except LLMError as exc:
            if not (isinstance(exc, LLMUnavailableError) and _connection_refused(exc)):
                res.servers.failed(slot.server, exc.code)
                raise
            await res.servers.refused(slot.server)
            refused |= {slot.server.url}
            if len(refused) >= len(res.servers.by_provider[provider]):
                raise
            logger.warning("model_server_refused", server=slot.server.url, provider=provider)
        finally:
            await res.servers.give_back(slot)


async def _take_slot(res: WorkerResources, provider: str, refused: frozenset[str]) -> Slot:
    try:
        slot = await res.servers.take(provider, skip=refused)
    except (RedisError, OSError) as exc:
        # Capacity cannot be counted: wait as if full rather than overload a server.
        logger.warning("model_slots_unavailable", error=type(exc).__name__)
        slot = None
    if slot is None:
        raise _NoCapacityError
    return slot


def _connection_refused(exc: LLMUnavailableError) -> bool:
    """Nothing reached the server (and no text came back): another server may take the call
    without it counting as a failed attempt."""
    return isinstance(exc.__cause__, httpx.ConnectError)


async def _call(
    res: WorkerResources,
    claimed: _Claimed,
    client: LLMClient,
    request: GenerationRequest,
    on_text: TextSink,
) -> GenerationResult:
    with llm_span(res.obs, client.provider, request) as span:
        try:
            # httpx bounds each read; this bounds the whole call, however the server drips.
            async with asyncio.timeout(res.settings.LLM_TIMEOUT_SECONDS):
                result = await client.generate(request, on_text)
        except TimeoutError:
            error = LLMUnavailableError(f"no answer within {res.settings.LLM_TIMEOUT_SECONDS:g}s")
            record_llm_error(span, error)
            raise error from None
        except LLMError as exc:
            record_llm_error(span, exc)
            raise
        record_llm_result(
            res.obs, span, client.provider, result, model_version_id=claimed.model_version.id
        )
        return result


class _NoCapacityError(Exception):
    """Every server of the provider is at its capacity."""


class _PermanentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def run_generation(res: WorkerResources, conversation_id: uuid.UUID) -> JobResult:
    """Run one attempt for one conversation; raises `arq.Retry` to try again later."""
    claimed = await _claim(res, conversation_id)
    if claimed is None:
        return JobResult.SKIPPED
    with (
        bind_context(attempt=claimed.attempt),
        publishing(res, conversation_id, attempt=claimed.attempt) as deltas,
    ):
        if claimed.attempt == 1 and claimed.conversation.queue_wait_ms is not None:
            res.obs.metrics.queue_wait_seconds.observe(claimed.conversation.queue_wait_ms / 1000)
        text = _Collected(deltas.add)
        call = asyncio.ensure_future(_attempt(res, claimed, on_text=text.add))
        try:
            with res.running.running(conversation_id, call):
                outcome = await call
        except asyncio.CancelledError:
            if _cancelled_by_client(res, conversation_id):
                return await _keep_cancelled_text(res, claimed, text.so_far(), deltas)
            # Shutdown took the job away mid-call: hand the row back, the attempt unspent.
            deltas.close()
            await write_outcome(res, conversation_id, attempt=claimed.attempt, outcome=HANDED_BACK)
            logger.warning("generation_handed_back", reason="worker_shutdown")
            raise
        # Every piece is in the stream before the row says how the attempt ended.
        await deltas.finish()
        if not await write_outcome(res, conversation_id, attempt=claimed.attempt, outcome=outcome):
            logger.warning("result_discarded", reason="lease_lost_or_cancelled")
            return JobResult.LEASE_LOST
        if outcome.status.is_terminal:
            # Both best effort and never raising; neither waits for the other.
            await asyncio.gather(deltas.end(), announce_end(res, conversation_id))
            if claimed.conversation.has_callback:
                await schedule_webhook(res, conversation_id)
        _record(res, claimed, outcome)
        if outcome.retry_in_seconds is not None:
            raise Retry(defer=outcome.retry_in_seconds)
        return JobResult(outcome.status.value)


HANDED_BACK = Outcome.handed_back()
# How long a job waits for a slot when every server of its provider is full (jittered).
CAPACITY_WAIT_SECONDS = 1.0


class _Collected:
    """The text generated so far, passed on to `sink` piece by piece."""

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink
        self._pieces: list[str] = []

    def add(self, piece: str) -> None:
        self._pieces.append(piece)
        self._sink(piece)

    def so_far(self) -> str:
        return "".join(self._pieces)


def _cancelled_by_client(res: WorkerResources, conversation_id: uuid.UUID) -> bool:
    """The model call was stopped by a client's cancel, not the job by a shutdown."""
    task = asyncio.current_task()
    shutting_down = task is not None and task.cancelling() > 0
    return not shutting_down and res.running.was_cancelled(conversation_id)


async def _keep_cancelled_text(
    res: WorkerResources, claimed: _Claimed, text: str, deltas: DeltaPublisher
) -> JobResult:
    """The client cancelled mid-call: the row is already `cancelled`; keep what the model had
    said on it, and end the stream."""
    conversation_id = claimed.conversation.id
    await deltas.finish()
    async with unit_of_work(res.session_factory) as session:
        kept = await ConversationRepository(session).keep_cancelled_text(
            conversation_id, attempt=claimed.attempt, text=text
        )
    await deltas.end()
    await announce_end(res, conversation_id)
    logger.info("generation_cancelled", kept_chars=len(text) if kept else 0)
    return JobResult.CANCELLED


async def _attempt(res: WorkerResources, claimed: _Claimed, *, on_text: TextSink) -> Outcome:
    """Ask the model, its text streamed to `on_text`, and say how the attempt ends; never
    raises but for cancellation."""
    settings, attempt = res.settings, claimed.attempt
    if attempt > settings.WORKER_MAX_ATTEMPTS:
        return Outcome.failed("max_attempts_exceeded", f"gave up after {attempt - 1} attempts")
    logger.info("generation_started", queue_wait_ms=claimed.conversation.queue_wait_ms)
    try:
        result = await _generate(res, claimed, on_text)
    except _NoCapacityError:
        # Not this attempt's fault: the row goes back untouched and the job waits.
        return Outcome.awaiting_capacity(
            delay_seconds=CAPACITY_WAIT_SECONDS * random.uniform(0.5, 1.5)
        )
    except _PermanentError as exc:
        return Outcome.failed(exc.code, exc.message)
    except LLMError as exc:
        if not exc.retriable or attempt >= settings.WORKER_MAX_ATTEMPTS:
            return Outcome.failed(exc.code, exc.message)
        delay = retry_delay(
            attempt, base=settings.WORKER_RETRY_BASE_SECONDS, cap=settings.WORKER_RETRY_MAX_SECONDS
        )
        return Outcome.retry(exc.code, exc.message, delay_seconds=delay)
    except Exception as exc:
        # A bug, not the model's fault: fail with a reason rather than retry it forever.
        logger.opt(exception=exc).error("generation_crashed")
        return Outcome.failed("internal_error", f"unexpected {type(exc).__name__}")
    return Outcome.completed(
        text=result.text,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        latency_ms=result.latency_ms,
        finish_reason=result.finish_reason,
        prompt_version=PROMPT_VERSION,
    )


def _record(res: WorkerResources, claimed: _Claimed, outcome: Outcome) -> None:
    """Log and count an outcome that was written."""
    metrics = res.obs.metrics
    if outcome.status is ConversationStatus.COMPLETED:
        metrics.conversations_completed_total.labels(str(claimed.model_version.id)).inc()
        logger.info(
            "generation_completed",
            latency_ms=outcome.latency_ms,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
        )
    elif outcome.status is ConversationStatus.FAILED:
        metrics.conversations_failed_total.labels(outcome.error_code).inc()
        logger.warning("generation_failed", error_code=outcome.error_code)
    elif outcome.hand_back and outcome.retry_in_seconds is not None:
        logger.info(
            "generation_waiting_for_capacity",
            provider=claimed.model_version.provider,
            delay_seconds=round(outcome.retry_in_seconds, 2),
        )
    elif outcome.retry_in_seconds is not None:
        metrics.job_retries_total.labels(outcome.error_code).inc()
        logger.warning(
            "generation_retry_scheduled",
            error_code=outcome.error_code,
            delay_seconds=round(outcome.retry_in_seconds, 2),
        )
