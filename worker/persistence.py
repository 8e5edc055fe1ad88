"""Writing an attempt's outcome, surviving a database that drops connections for a moment."""

from __future__ import annotations

import asyncio
import uuid

from loguru import logger

from shared.db import driver_connection, is_db_unavailable
from shared.lifecycle import Outcome
from shared.repositories import attempt_statements
from worker.context import WorkerResources

WRITE_TRIES = 6


async def write_outcome(
    res: WorkerResources, conversation_id: uuid.UUID, *, attempt: int, outcome: Outcome
) -> bool:
    """Write the outcome, retrying lost connections so a generated answer is not thrown away.

    One statement on the driver (`attempt_statements.settle`), committing on its own. It is
    idempotent (fenced by `attempt`), so repeating it after a connection broke mid-statement
    is safe. Returns False when the attempt no longer owns the row.
    """
    delay = 0.2
    retried = False
    for tries_left in range(WRITE_TRIES - 1, -1, -1):
        try:
            async with driver_connection(res.engine) as db:
                if await attempt_statements.settle(db, conversation_id, outcome, attempt=attempt):
                    return True
                # A write whose acknowledgement was lost looks like a lost lease on retry.
                return retried and await attempt_statements.has_outcome(
                    db, conversation_id, attempt=attempt, status=outcome.status
                )
        except Exception as exc:
            if not tries_left or not is_db_unavailable(exc):
                raise
            logger.warning("outcome_write_retry", error=type(exc).__name__, tries_left=tries_left)
            retried = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")
