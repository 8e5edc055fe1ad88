"""Limits on submissions: per-user rate, global back-pressure, and the configured text sizes.

The rate limit lives in Redis (a moving window, shared by every API replica); the per-user
cap on unfinished conversations lives in PostgreSQL (`shared.services.conversations`), where
the rows are. When Redis cannot answer, both Redis checks let the submission through: the
row is still committed and the sweeper queues it, which is the promise a 202 makes.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from arq.connections import ArqRedis
from fastapi.exceptions import RequestValidationError
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from loguru import logger
from redis.exceptions import RedisError

from shared.errors import ServiceUnavailableError, TooManyRequestsError
from shared.schemas.conversations import ConversationCreate
from shared.settings import Settings, parse_rate_limit

QUEUE_FULL_RETRY_AFTER_SECONDS = 30
# How stale the queue depth may be while it is far from QUEUE_MAX_DEPTH, and how far is far.
DEPTH_SAMPLE_SECONDS = 1.0
DEPTH_EXACT_MARGIN = 1000


class SubmissionLimiter:
    """Checks a submission against the per-user rate and the queue's depth."""

    def __init__(self, settings: Settings, queue: ArqRedis) -> None:
        self._rate = parse_rate_limit(settings.SUBMIT_RATE_LIMIT)
        self._max_depth = settings.QUEUE_MAX_DEPTH
        self._queue = queue
        self._queue_name = settings.QUEUE_NAME
        self._depth: int | None = None
        self._depth_read_at = 0.0
        # Shares the queue's connection pool; keys live beside the queue's, under its name.
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=f"{settings.QUEUE_NAME}:ratelimit",
            connection_pool=queue.connection_pool,  # type: ignore[arg-type]  # typed too narrowly
        )
        self._limiter = MovingWindowRateLimiter(storage)

    async def check_rate(self, user_id: uuid.UUID) -> None:
        """429 with Retry-After once the user has used up the window."""
        if self._rate is None:
            return
        try:
            if await self._limiter.hit(self._rate, str(user_id)):
                return
            stats = await self._limiter.get_window_stats(self._rate, str(user_id))
        except (RedisError, OSError) as exc:
            logger.warning("rate_limit_unavailable", error=type(exc).__name__)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequestsError(
            f"Submission rate limit reached ({self._rate.amount} per "
            f"{self._rate.get_expiry()} s); retry later",
            details={"limit": self._rate.amount, "window_seconds": self._rate.get_expiry()},
            retry_after=retry_after,
        )

    async def check_queue_depth(self) -> None:
        """503 with Retry-After while the queue holds `QUEUE_MAX_DEPTH` jobs or more.

        The depth is read from Redis at most once a second while it is far below the limit
        (submissions are most of the traffic; a read each would be a round trip each), and on
        every submission once it is within `DEPTH_EXACT_MARGIN` of the limit, where the answer
        must be exact. Far below, a second's submissions from every replica is the slack.
        """
        if not self._max_depth:
            return
        now = time.monotonic()
        depth = self._depth
        near = depth is None or depth >= self._max_depth - DEPTH_EXACT_MARGIN
        if near or now - self._depth_read_at >= DEPTH_SAMPLE_SECONDS:
            try:
                depth = self._depth = int(await self._queue.zcard(self._queue_name))
            except (RedisError, OSError) as exc:
                logger.warning("queue_depth_unavailable", error=type(exc).__name__)
                self._depth = None
                return
            self._depth_read_at = now
        if depth is not None and depth >= self._max_depth:
            raise ServiceUnavailableError(
                "The queue is full; retry later",
                details={"queue_depth": depth, "max_depth": self._max_depth},
                retry_after=QUEUE_FULL_RETRY_AFTER_SECONDS,
            )


def _too_long(field: str, limit: int) -> dict[str, Any]:
    return {
        "loc": ("body", field),
        "msg": f"String should have at most {limit} characters",
        "type": "string_too_long",
        "ctx": {"max_length": limit},
    }


def check_submission_sizes(data: ConversationCreate, settings: Settings) -> None:
    """The configured maxima (the schema carries the same numbers: see `api.openapi`)."""
    errors: list[dict[str, Any]] = []
    for field, limit in (
        ("prompt", settings.PROMPT_MAX_CHARS),
        ("system_instruction", settings.SYSTEM_INSTRUCTION_MAX_CHARS),
        ("context", settings.CONTEXT_MAX_CHARS),
    ):
        value = getattr(data, field)
        if value is not None and len(value) > limit:
            errors.append(_too_long(field, limit))
    if data.max_tokens is not None and data.max_tokens > settings.MAX_TOKENS_LIMIT:
        errors.append(
            {
                "loc": ("body", "max_tokens"),
                "msg": f"Input should be less than or equal to {settings.MAX_TOKENS_LIMIT}",
                "type": "less_than_equal",
                "ctx": {"le": settings.MAX_TOKENS_LIMIT},
            }
        )
    if errors:
        raise RequestValidationError(errors)
