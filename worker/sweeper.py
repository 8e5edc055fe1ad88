"""The sweeper: makes PostgreSQL's view of the work true again after anything was lost.

Redis here may forget every job (it keeps nothing on disk), workers may die mid-job and the
API may fail to enqueue. The sweeper runs as an arq cron job in every worker; arq runs each
tick once per queue, and `SKIP LOCKED` keeps concurrent sweeps from touching the same rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from loguru import logger
from redis.exceptions import RedisError
from sqlalchemy import select

from shared.db import unit_of_work
from shared.models import Conversation, ModelVersion, Priority, User
from shared.queue import Placement, enqueue_generation, placement_for, release_job
from shared.repositories.conversations import ConversationRepository
from worker.context import WorkerResources, resources
from worker.webhook_sweep import sweep_webhooks

SWEEP_BATCH = 500


@dataclass(frozen=True, slots=True)
class SweepReport:
    reclaimed: int
    requeued: int


async def _placements(res: WorkerResources, ids: list[uuid.UUID]) -> dict[uuid.UUID, Placement]:
    """Where each conversation's job goes in the fair order (its user, priority, provider)."""
    if not ids:
        return {}
    stmt = (
        select(
            Conversation.id,
            Conversation.user_id,
            Conversation.priority,
            ModelVersion.provider,
            User.queue_weight,
        )
        .join(ModelVersion, ModelVersion.id == Conversation.model_version_id)
        .join(User, User.id == Conversation.user_id)
        .where(Conversation.id.in_(ids))
    )
    async with res.session_factory() as session:
        rows = (await session.execute(stmt)).all()
    return {
        row.id: placement_for(
            row.user_id,
            Priority(row.priority),
            row.provider,
            settings=res.settings,
            weight=row.queue_weight,
        )
        for row in rows
    }


async def _enqueue_all(
    queue: ArqRedis, ids: list[uuid.UUID], placements: dict[uuid.UUID, Placement]
) -> int:
    queued = 0
    for conversation_id in ids:
        # Idempotent: a conversation whose job still exists keeps that one job.
        if await enqueue_generation(
            queue, conversation_id, placement=placements.get(conversation_id)
        ):
            queued += 1
    return queued


async def sweep(res: WorkerResources, queue: ArqRedis) -> SweepReport:
    settings = res.settings
    async with unit_of_work(res.session_factory) as session:
        reclaimed = await ConversationRepository(session).reclaim_expired_leases(
            max_attempts=settings.WORKER_MAX_ATTEMPTS, limit=SWEEP_BATCH
        )
    async with unit_of_work(res.session_factory) as session:
        due = await ConversationRepository(session).due_pending_ids(
            older_than_seconds=settings.WORKER_SWEEP_PENDING_GRACE_SECONDS, limit=SWEEP_BATCH
        )
    if reclaimed:
        # Logged before their jobs are released: a second attempt may start the moment after.
        logger.info("leases_reclaimed", count=len(reclaimed))
    for conversation_id in reclaimed:
        # Its job is still in Redis but held by the dead worker's in-progress marker.
        await release_job(queue, conversation_id)
    # Reclaimed rows are due at once; the others had their grace period to show up.
    ids = list(dict.fromkeys([*reclaimed, *due]))
    requeued = await _enqueue_all(queue, ids, await _placements(res, ids))
    await sweep_webhooks(res, queue)
    report = SweepReport(reclaimed=len(reclaimed), requeued=requeued)
    if report.reclaimed or report.requeued:
        logger.info("sweep_done", reclaimed=report.reclaimed, requeued=report.requeued)
    return report


async def sweep_job(ctx: dict[str, Any]) -> None:
    """arq cron entry point."""
    try:
        await sweep(resources(ctx), ctx["redis"])
    except (RedisError, OSError) as exc:
        logger.warning("sweep_skipped", error=type(exc).__name__)
