"""Stopping a generation a client cancelled, on whichever worker runs it.

The API writes the cancel to the row, commits, and publishes the conversation id on
`<QUEUE_NAME>:cancel` (`shared.completion`). Every worker listens (`worker.queue_worker`) and
hands the id to its `RunningGenerations`: if this process runs that conversation's model call,
the call's task is cancelled, the HTTP request to the model server is closed, and the attempt
keeps the text generated so far on the cancelled row. A cancel that arrives between the claim
and the model call is remembered for a while, so the call stops as soon as it starts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

# How long a cancel for a conversation this worker is not (yet) running is remembered.
REMEMBER_SECONDS = 60.0


class RunningGenerations:
    def __init__(self) -> None:
        self._tasks: dict[uuid.UUID, asyncio.Task[object]] = {}
        self._cancelled: dict[uuid.UUID, float] = {}

    @contextmanager
    def running(self, conversation_id: uuid.UUID, task: asyncio.Task[object]) -> Iterator[None]:
        """`task` runs the model call of `conversation_id` for the duration of the block."""
        self._tasks[conversation_id] = task
        if conversation_id in self._cancelled:
            task.cancel()
        try:
            yield
        finally:
            if self._tasks.get(conversation_id) is task:
                del self._tasks[conversation_id]

    def cancel(self, conversation_id: uuid.UUID) -> bool:
        """Stop the model call of `conversation_id` if this process runs it; True if so."""
        now = time.monotonic()
        self._cancelled = {c: t for c, t in self._cancelled.items() if now - t < REMEMBER_SECONDS}
        self._cancelled[conversation_id] = now
        task = self._tasks.get(conversation_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def was_cancelled(self, conversation_id: uuid.UUID) -> bool:
        return conversation_id in self._cancelled
