from __future__ import annotations

import uuid

from pydantic import BaseModel, Field


class QueuedByUser(BaseModel):
    """One user's unfinished conversations."""

    user_id: uuid.UUID
    email: str
    pending: int = Field(description="Conversations waiting for a worker")
    running: int = Field(description="Conversations a worker is answering")
