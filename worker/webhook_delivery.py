"""One webhook delivery attempt: check where it goes, sign, send, log the outcome.

Called as its own arq job (`webhook:<conversation id>`), never from the generation path. The
row in `webhook_delivery` decides: the claim (due, not under way) hands out the attempt
number that fences the result; a failure is tried again with the same `webhook-id` after an
exponential backoff, until `WEBHOOK_MAX_ATTEMPTS`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from arq import Retry
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import webhook_deliveries as store
from shared.db import is_db_unavailable
from shared.logs import bind_context
from shared.settings import Settings
from shared.webhooks import (
    DestinationRefusedError,
    IPAddress,
    check_addresses,
    check_url,
    resolve,
    sign,
)
from worker.backoff import retry_delay
from worker.context import WorkerResources, resources

USER_AGENT = "ai-eng-api-webhooks/1"
# How long an attempt holds the row beyond its own timeout (signing, reading, writing back).
LOCK_MARGIN_SECONDS = 30.0
DATABASE_RETRY_SECONDS = 2.0
MAX_ERROR_CHARS = 500


def job_timeout(settings: Settings) -> float:
    return settings.WEBHOOK_TIMEOUT_SECONDS + LOCK_MARGIN_SECONDS


async def deliver_webhook(ctx: dict[str, Any], conversation_id: Any, *_: Any, **__: Any) -> str:
    """arq entry point: one attempt at delivering one conversation's webhook."""
    try:
        cid = uuid.UUID(str(conversation_id))
    except ValueError:
        logger.error("job_payload_invalid", job_id=ctx.get("job_id"))
        return "rejected"
    res = resources(ctx)
    with bind_context(conversation_id=cid, job_id=ctx.get("job_id")):
        try:
            return await run_delivery(res.settings, res.engine, cid)
        except Exception as exc:
            if not is_db_unavailable(exc):
                raise
            # The database is away: the row still says what to do; look again shortly.
            logger.warning("webhook_deferred", reason="database", error=type(exc).__name__)
            raise Retry(defer=DATABASE_RETRY_SECONDS) from exc


async def run_delivery(settings: Settings, engine: AsyncEngine, conversation_id: uuid.UUID) -> str:
    claimed = await store.claim(engine, conversation_id, lock_seconds=job_timeout(settings))
    if claimed is None:
        wait = await store.waiting(engine, conversation_id)
        if wait is None:
            return "skipped"  # delivered, given up, or nothing to deliver
        raise Retry(defer=wait + 0.05)  # not due yet, or under way elsewhere
    with bind_context(webhook_attempt=claimed.attempt):
        result = await attempt(settings, engine, claimed)
        if not await store.record(engine, claimed, result):
            logger.warning("webhook_result_discarded", reason="attempt_no_longer_owns_the_row")
            return "lost"
        _log(result)
    if result.state == "pending":
        raise Retry(defer=result.delay_seconds)
    return result.state


def _log(result: store.AttemptResult) -> None:
    fields = {"status_code": result.status_code, "error": result.error}
    if result.state == "delivered":
        logger.info("webhook_delivered", status_code=result.status_code)
    elif result.state == "failed":
        logger.warning("webhook_failed", **fields)
    else:
        logger.info(
            "webhook_retry_scheduled", delay_seconds=round(result.delay_seconds, 2), **fields
        )


async def attempt(
    settings: Settings, engine: AsyncEngine, claimed: store.ClaimedDelivery
) -> store.AttemptResult:
    """Make one attempt; never raises but for cancellation and a lost database."""
    started = time.monotonic()

    def ended(
        status_code: int | None, error: str | None, *, retriable: bool
    ) -> store.AttemptResult:
        duration = round((time.monotonic() - started) * 1000, 3)
        if error is None:
            return store.AttemptResult("delivered", status_code, None, duration)
        error = error[:MAX_ERROR_CHARS]
        if not retriable or claimed.attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
            return store.AttemptResult("failed", status_code, error, duration)
        delay = retry_delay(
            claimed.attempt,
            base=settings.WEBHOOK_RETRY_BASE_SECONDS,
            cap=settings.WEBHOOK_RETRY_MAX_SECONDS,
        )
        return store.AttemptResult("pending", status_code, error, duration, delay)

    if settings.WEBHOOK_SECRET is None:
        return ended(None, "WEBHOOK_SECRET is not set on the worker", retriable=True)
    async with engine.connect() as connection:
        body = await store.conversation_json(connection, claimed.conversation_id)
    if body is None:
        return ended(None, "the conversation no longer exists", retriable=False)
    allowed = settings.webhook_allowed_hosts
    try:
        destination = check_url(claimed.url, allowed)
        addresses = await resolve(destination.host, destination.port)
        check_addresses(destination.host, addresses, allowed)
    except DestinationRefusedError as exc:
        # A rule, not a hiccup: nothing is sent, now or later.
        return ended(None, f"destination refused: {exc}", retriable=False)
    except OSError as exc:
        return ended(None, f"cannot resolve {destination.host}: {exc}", retriable=True)
    signed = sign(
        settings.WEBHOOK_SECRET.get_secret_value(), message_id=claimed.webhook_id, body=body
    )
    try:
        async with asyncio.timeout(settings.WEBHOOK_TIMEOUT_SECONDS):
            status_code = await _post(
                claimed.url, addresses[0], signed.body, signed.headers, settings
            )
    except TimeoutError:
        return ended(
            None, f"no answer within {settings.WEBHOOK_TIMEOUT_SECONDS:g}s", retriable=True
        )
    except httpx.HTTPError as exc:
        return ended(None, f"{type(exc).__name__}: {exc}".rstrip(": "), retriable=True)
    if 200 <= status_code < 300:
        return ended(status_code, None, retriable=False)
    return ended(status_code, f"HTTP {status_code}", retriable=True)


async def _post(
    url: str, address: IPAddress, body: bytes, headers: dict[str, str], settings: Settings
) -> int:
    """POST to the address that was checked, never to a fresh resolution of the name (which
    could answer differently: DNS rebinding). The URL's host stays the `Host` header and, for
    https, the name the certificate is checked against."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
    async with httpx.AsyncClient(
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
    ) as client:
        response = await client.post(
            pinned,
            content=body,
            headers={**headers, "host": host_header, "user-agent": USER_AGENT},
            extensions=extensions,
        )
    return response.status_code


# How long the generation path gives the delivery's scheduling; the sweeper does the rest.
SCHEDULE_TIMEOUT_SECONDS = 2.0


async def schedule_webhook(res: WorkerResources, conversation_id: uuid.UUID) -> None:
    """After a terminal outcome is written: queue the conversation's webhook, if it has a
    callback. Bounded and never raising, so it cannot hold up or fail the generation."""
    try:
        async with asyncio.timeout(SCHEDULE_TIMEOUT_SECONDS):
            await store.schedule_delivery(
                res.engine, res.events_redis, res.settings.QUEUE_NAME, conversation_id
            )
    except TimeoutError:
        logger.warning("webhook_not_scheduled", error="TimeoutError")
