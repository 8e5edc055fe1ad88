from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Record


class ConversationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


class Priority(StrEnum):
    """How a conversation waits for a worker: `interactive` work overtakes `batch` work in the
    queue, which still gets its share (see docs/architecture.md, "Scheduling")."""

    INTERACTIVE = "interactive"
    BATCH = "batch"

    def at_most(self, ceiling: Priority) -> Priority:
        """This priority, lowered to `ceiling` if it is above it."""
        return self if _RANK[self] <= _RANK[ceiling] else ceiling


_RANK = {Priority.BATCH: 0, Priority.INTERACTIVE: 1}
PRIORITY_VALUES = ", ".join(f"'{p.value}'" for p in Priority)


TERMINAL_STATUSES = frozenset(
    {ConversationStatus.COMPLETED, ConversationStatus.FAILED, ConversationStatus.CANCELLED}
)
_STATUS_VALUES = ", ".join(f"'{s.value}'" for s in ConversationStatus)

# Named by the metadata's convention: fk_<table>_<column>_<referred table>.
USER_FOREIGN_KEY = "fk_conversation_user_id_user"
MODEL_VERSION_FOREIGN_KEY = "fk_conversation_model_version_id_model_version"
IDEMPOTENCY_KEY_UNIQUE_INDEX = "uq_conversation_user_id_idempotency_key"


class Conversation(Record):
    __tablename__ = "conversation"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("user.id"))
    model_version_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("model_version.id")
    )
    prompt: Mapped[str] = mapped_column(Text)
    system_instruction: Mapped[str | None] = mapped_column(Text)
    context: Mapped[str | None] = mapped_column(Text)
    temperature: Mapped[float | None] = mapped_column(Float)
    top_p: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(Text)

    status: Mapped[str] = mapped_column(String(16), server_default=ConversationStatus.PENDING.value)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    prompt_version: Mapped[str | None] = mapped_column(String(64))
    finish_reason: Mapped[str | None] = mapped_column(String(64))
    trace_id: Mapped[str | None] = mapped_column(String(32))

    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    queue_wait_ms: Mapped[float | None] = mapped_column(Float)

    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    # The earliest time the sweeper may hand a pending row to the queue again.
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    # `Idempotency-Key` of the submission, unique per user while set, and the fingerprint of
    # the body it came with (a reuse with another body is refused).
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Where the finished conversation is delivered (docs/webhooks.md); None: nowhere.
    callback_url: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(16), server_default=Priority.INTERACTIVE.value)

    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint(f"priority IN ({PRIORITY_VALUES})", name="priority"),
        Index("ix_conversation_user_id_created_at", "user_id", "created_at"),
        Index("ix_conversation_model_version_id", "model_version_id"),
        Index("ix_conversation_created_at", "created_at"),
        Index("ix_conversation_status_created_at", "status", "created_at"),
        # The sweeper's scans: only unfinished rows, so the index stays small.
        Index(
            "ix_conversation_unfinished",
            "status",
            "lease_expires_at",
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
        # One conversation per user and idempotency key.
        Index(
            IDEMPOTENCY_KEY_UNIQUE_INDEX,
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # The sweeper's look for finished conversations whose webhook delivery was never made.
        Index(
            "ix_conversation_completed_at_callback",
            "completed_at",
            postgresql_where=text("callback_url IS NOT NULL"),
        ),
        # The oldest pending conversation of each priority (readiness and metrics).
        Index(
            "ix_conversation_pending_priority",
            "priority",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # Counting one user's unfinished conversations (the per-user cap at submit).
        Index(
            "ix_conversation_user_id_unfinished",
            "user_id",
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )
