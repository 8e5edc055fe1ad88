"""The job contract between the API (producer) and the worker (consumer)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

GENERATE_CONVERSATION = "generate_conversation"


class GenerationJob(BaseModel):
    """What a generation job carries: an id to reload the row, and the trace to join."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conversation_id: uuid.UUID
    trace_context: dict[str, str] = {}


def generation_job_id(conversation_id: uuid.UUID) -> str:
    """Deterministic, so enqueuing the same conversation twice leaves one job."""
    return f"conversation:{conversation_id}"


def serialize_job(payload: dict[str, Any]) -> bytes:
    """arq serializer: JSON, never pickle, so a job payload can never run code."""
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def deserialize_job(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise TypeError("job payload is not a JSON object")
    return value
