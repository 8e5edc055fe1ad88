"""arq worker configuration built from the project settings."""

from __future__ import annotations

import os
import socket
from typing import Any

from arq import cron
from arq.worker import func
from loguru import logger

from shared.heap import freeze_startup_heap, thaw_heap
from shared.job_contract import GENERATE_CONVERSATION, deserialize_job, serialize_job
from shared.model_servers import configured_servers
from shared.queue import create_queue_pool, heartbeat_key
from shared.settings import Settings
from shared.webhook_deliveries import DELIVER_WEBHOOK
from worker.context import (
    RESOURCES_KEY,
    WorkerResources,
    check_llm,
    open_resources,
    resources,
)
from worker.jobs import generate_conversation
from worker.observability import Observability
from worker.queue_worker import QueueWorker
from worker.scheduler import provider_capacities
from worker.sweeper import sweep_job
from worker.webhook_delivery import deliver_webhook, job_timeout

# Attempts are counted in PostgreSQL (WORKER_MAX_ATTEMPTS); arq's own count only has to stay
# out of the way, including the re-runs that deferrals and shutdown hand-backs cause.
ARQ_MAX_TRIES = 10_000


def build_worker(settings: Settings, obs: Observability, **overrides: Any) -> QueueWorker:
    """A ready-to-run arq Worker; `overrides` exist for tests (e.g. burst=True)."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[RESOURCES_KEY] = await open_resources(settings, obs)
        await check_llm(resources(ctx))
        freeze_startup_heap()
        logger.info("worker_ready", queue=settings.QUEUE_NAME, max_jobs=settings.WORKER_MAX_JOBS)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        # Popped, so a second call (after a close that Redis cut short) closes nothing twice.
        opened = ctx.pop(RESOURCES_KEY, None)
        if isinstance(opened, WorkerResources):
            thaw_heap()
            await opened.close()

    interval = settings.WORKER_SWEEP_INTERVAL_SECONDS
    options: dict[str, Any] = {
        "functions": [_generate_function(settings), _webhook_function(settings)],
        "cron_jobs": [
            cron(
                sweep_job,
                name="sweep",
                second=set(range(0, 60, interval)),
                run_at_startup=True,
                timeout=max(interval * 4, 30),
                keep_result=0,
            )
        ],
        "redis_pool": create_queue_pool(settings),
        "queue_name": settings.QUEUE_NAME,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "max_jobs": settings.WORKER_MAX_JOBS,
        "job_timeout": settings.WORKER_JOB_TIMEOUT_SECONDS,
        "poll_delay": settings.WORKER_POLL_DELAY_SECONDS,
        "max_tries": ARQ_MAX_TRIES,
        # No results in Redis: a finished job id must be free for the sweeper to reuse.
        "keep_result": 0,
        "health_check_interval": settings.WORKER_HEALTH_CHECK_INTERVAL_SECONDS,
        # arq's status line, one key per process (what people and the test harness read).
        "health_check_key": heartbeat_key(settings.QUEUE_NAME, socket.gethostname(), os.getpid()),
        # In the registry, a heartbeat expires after two missed refreshes.
        "heartbeat_ttl_seconds": settings.WORKER_HEALTH_CHECK_INTERVAL_SECONDS * 2 + 1,
        # Jobs start only while their provider's servers have room (worker/scheduler.py).
        "provider_capacities": provider_capacities(configured_servers(settings)),
        "job_completion_wait": settings.WORKER_SHUTDOWN_GRACE_SECONDS,
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        "log_results": False,
    }
    options.update(overrides)
    return QueueWorker(**options)


def _generate_function(settings: Settings) -> Any:
    return func(
        generate_conversation,
        name=GENERATE_CONVERSATION,
        timeout=settings.WORKER_JOB_TIMEOUT_SECONDS,
        keep_result=0,
        max_tries=ARQ_MAX_TRIES,
    )


def _webhook_function(settings: Settings) -> Any:
    return func(
        deliver_webhook,
        name=DELIVER_WEBHOOK,
        timeout=job_timeout(settings),
        keep_result=0,
        max_tries=ARQ_MAX_TRIES,
    )
