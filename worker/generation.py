"""One generation attempt: claim the row, call the model, write the outcome back.

PostgreSQL is the source of truth and the queue only a trigger: every decision here is
made from the row, and every write is fenced by the attempt number the claim handed out.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from arq import Retry
from loguru import logger

from shared.db import unit_of_work
from shared.llm.base import GenerationRequest, GenerationResult, LLMError, LLMUnavailableError
from shared.llm.prompts import PROMPT_VERSION, build_messages
from shared.models import Conversation, ConversationStatus, ModelVersion
from shared.repositories.conversations import ConversationRepository, Outcome
from worker.backoff import retry_delay
from worker.context import WorkerResources
from worker.observability import llm_span, record_llm_error, record_llm_result
from worker.persistence import write_outcome


class JobResult(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    SKIPPED = "skipped"
    LEASE_LOST = "lease_lost"


class _Claimed:
    """A claimed attempt: the row as the claim left it, and the model it asks for."""

    def __init__(self, conversation: Conversation, model_version: ModelVersion) -> None:
        self.conversation = conversation
        self.model_version = model_version
        self.attempt = conversation.attempts


async def _claim(res: WorkerResources, conversation_id: uuid.UUID) -> _Claimed | None:
    """Claim the row, or decide what to do when it cannot be claimed right now."""
    async with unit_of_work(res.session_factory) as session:
        repo = ConversationRepository(session)
        conversation = await repo.claim(
            conversation_id, lease_seconds=res.settings.WORKER_LEASE_SECONDS
        )
        if conversation is not None:
            model_version = await session.get(ModelVersion, conversation.model_version_id)
            assert model_version is not None  # a foreign key guarantees it
            return _Claimed(conversation, model_version)
        current = await repo.get(conversation_id)
    if current is None or ConversationStatus(current.status).is_terminal:
        logger.info("job_skipped", reason="finished_or_deleted")
        return None
    # Another worker holds a live lease (a duplicate delivery, or a worker that may have
    # died). Come back when the lease runs out: by then it is finished or reclaimable.
    remaining = 1.0
    if current.lease_expires_at is not None:
        remaining = max((current.lease_expires_at - datetime.now(UTC)).total_seconds(), 0) + 1
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


def _completed(result: GenerationResult) -> Outcome:
    total = None
    if result.input_tokens is not None and result.output_tokens is not None:
        total = result.input_tokens + result.output_tokens
    return Outcome(
        ConversationStatus.COMPLETED,
        {
            # PostgreSQL text cannot hold NUL; a model that emits one still gets its answer
            # stored, with the character shown as the replacement mark.
            "response": result.text.replace("\x00", "\ufffd"),
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "total_tokens": total,
            "latency_ms": round(result.latency_ms, 3),
            "finish_reason": result.finish_reason,
            "prompt_version": PROMPT_VERSION,
            "error_code": None,
            "error_message": None,
        },
    )


def _failed(code: str, message: str) -> Outcome:
    return Outcome(ConversationStatus.FAILED, {"error_code": code, "error_message": message[:2000]})


async def _generate(res: WorkerResources, claimed: _Claimed) -> GenerationResult:
    client = res.llm_clients.get(claimed.model_version.provider)
    if client is None:
        raise _PermanentError(
            "provider_unsupported",
            f"no worker client for provider '{claimed.model_version.provider}'",
        )
    request = _request(claimed, max_tokens_limit=res.settings.MAX_TOKENS_LIMIT)
    with llm_span(res.obs, client.provider, request) as span:
        try:
            # httpx bounds each read; this bounds the whole call, however the server drips.
            async with asyncio.timeout(res.settings.OLLAMA_TIMEOUT_SECONDS):
                result = await client.generate(request)
        except TimeoutError:
            error = LLMUnavailableError(
                f"no answer within {res.settings.OLLAMA_TIMEOUT_SECONDS:g}s"
            )
            record_llm_error(span, error)
            raise error from None
        except LLMError as exc:
            record_llm_error(span, exc)
            raise
        record_llm_result(
            res.obs, span, client.provider, result, model_version_id=claimed.model_version.id
        )
        return result


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
    settings, attempt, metrics = res.settings, claimed.attempt, res.obs.metrics
    log = logger.bind(attempt=attempt)
    if attempt == 1 and claimed.conversation.queue_wait_ms is not None:
        metrics.queue_wait_seconds.observe(claimed.conversation.queue_wait_ms / 1000)

    async def finish(outcome: Outcome) -> bool:
        kept = await write_outcome(res, conversation_id, attempt=attempt, outcome=outcome)
        if not kept:
            log.warning("result_discarded", reason="lease_lost_or_cancelled")
            return False
        code = outcome.values.get("error_code")
        if outcome.status is ConversationStatus.COMPLETED:
            metrics.conversations_completed_total.labels(str(claimed.model_version.id)).inc()
        elif outcome.status is ConversationStatus.FAILED:
            metrics.conversations_failed_total.labels(code).inc()
        elif code:
            metrics.job_retries_total.labels(code).inc()
        return True

    if attempt > settings.WORKER_MAX_ATTEMPTS:
        await finish(_failed("max_attempts_exceeded", f"gave up after {attempt - 1} attempts"))
        return JobResult.FAILED
    log.info("generation_started", queue_wait_ms=claimed.conversation.queue_wait_ms)
    try:
        result = await _generate(res, claimed)
    except asyncio.CancelledError:
        # Shutdown took the job away mid-call: hand the row back without spending an attempt.
        await write_outcome(
            res,
            conversation_id,
            attempt=attempt,
            outcome=Outcome(ConversationStatus.PENDING, {"attempts": attempt - 1}),
        )
        log.warning("generation_handed_back", reason="worker_shutdown")
        raise
    except _PermanentError as exc:
        log.warning("generation_failed", error_code=exc.code)
        return (
            JobResult.FAILED
            if await finish(_failed(exc.code, exc.message))
            else JobResult.LEASE_LOST
        )
    except LLMError as exc:
        if not exc.retriable or attempt >= settings.WORKER_MAX_ATTEMPTS:
            log.warning("generation_failed", error_code=exc.code, retriable=exc.retriable)
            kept = await finish(_failed(exc.code, exc.message))
            return JobResult.FAILED if kept else JobResult.LEASE_LOST
        delay = retry_delay(
            attempt, base=settings.WORKER_RETRY_BASE_SECONDS, cap=settings.WORKER_RETRY_MAX_SECONDS
        )
        retry = Outcome(
            ConversationStatus.PENDING,
            {
                "error_code": exc.code,
                "error_message": exc.message[:2000],
                "next_attempt_at": datetime.now(UTC) + timedelta(seconds=delay),
            },
        )
        if not await finish(retry):
            return JobResult.LEASE_LOST
        log.warning(
            "generation_retry_scheduled", error_code=exc.code, delay_seconds=round(delay, 2)
        )
        raise Retry(defer=delay) from None
    except Exception as exc:
        # A bug, not the model's fault: fail with a reason rather than retry it forever.
        log.opt(exception=exc).error("generation_crashed")
        kept = await finish(_failed("internal_error", f"unexpected {type(exc).__name__}"))
        return JobResult.FAILED if kept else JobResult.LEASE_LOST
    kept = await finish(_completed(result))
    if kept:
        log.info(
            "generation_completed",
            latency_ms=round(result.latency_ms, 1),
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
        )
    return JobResult.COMPLETED if kept else JobResult.LEASE_LOST
