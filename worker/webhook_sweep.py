"""The sweeper's part for webhooks: nothing is lost across worker crashes or Redis loss.

A delivery is lost in two ways: its row was never made (the process that wrote the terminal
status died before making it, or the database refused it then), or its job is gone (Redis
restarted empty, a worker died mid-attempt). Each tick makes the missing rows and re-sends
the job of every delivery due for longer than the grace period; the job id is deterministic,
so a delivery whose job is merely waiting keeps its one job.
"""

from __future__ import annotations

from arq.connections import ArqRedis
from loguru import logger

from shared import webhook_deliveries as store
from worker.context import WorkerResources

SWEEP_BATCH = 500


async def sweep_webhooks(res: WorkerResources, queue: ArqRedis) -> int:
    """Make the missing deliveries and re-send the due ones; how many jobs were sent."""
    grace = res.settings.WORKER_SWEEP_PENDING_GRACE_SECONDS
    made = [
        conversation_id
        for conversation_id in await store.missing_ids(
            res.engine, older_than_seconds=grace, limit=SWEEP_BATCH
        )
        if await store.open_delivery(res.engine, conversation_id)
    ]
    due = await store.due_ids(res.engine, older_than_seconds=grace, limit=SWEEP_BATCH)
    sent = 0
    for conversation_id in dict.fromkeys([*made, *due]):
        if await store.enqueue_delivery(queue, res.settings.QUEUE_NAME, conversation_id):
            sent += 1
    if sent:
        logger.info("webhook_sweep_done", requeued=sent)
    return sent
