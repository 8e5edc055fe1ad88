"""arq job functions: parse the payload, then hand over to framework-free code."""

from __future__ import annotations

from typing import Any

from arq import Retry
from loguru import logger
from pydantic import ValidationError

from shared.db import is_db_unavailable
from shared.job_contract import GenerationJob
from shared.logs import bind_context
from worker.context import resources
from worker.generation import JobResult, run_generation
from worker.observability import job_span

DATABASE_RETRY_SECONDS = 2.0


async def generate_conversation(
    ctx: dict[str, Any], conversation_id: Any, trace_context: Any = None, *_: Any, **__: Any
) -> str:
    """Generate the answer of one conversation.

    A malformed payload is logged and dropped, never executed; an unexpected error fails the
    conversation with a reason instead of killing the worker or looping forever.
    """
    job_id = ctx.get("job_id")
    try:
        job = GenerationJob(conversation_id=conversation_id, trace_context=trace_context or {})
    except ValidationError as exc:
        logger.error("job_payload_invalid", job_id=job_id, errors=exc.error_count())
        return "rejected"
    res = resources(ctx)
    conversation_id = str(job.conversation_id)
    with (
        bind_context(conversation_id=conversation_id, job_id=job_id),
        job_span(
            res.obs,
            trace_context=job.trace_context,
            queue_name=res.settings.QUEUE_NAME,
            job_id=job_id,
            conversation_id=conversation_id,
        ) as span,
        res.obs.metrics.job_duration_seconds.time(),
    ):
        try:
            result = await run_generation(res, job.conversation_id)
            span.set_attribute("job.result", result.value)
        except Retry:
            raise
        except Exception as exc:
            if is_db_unavailable(exc):
                # The database blinked before the row was claimed: keep the job, try soon.
                logger.warning("job_deferred", reason="database_unavailable")
                raise Retry(defer=DATABASE_RETRY_SECONDS) from None
            logger.exception("job_crashed")
            raise
        return result.value


__all__ = ["JobResult", "generate_conversation"]
