"""The webhook delivery of a conversation that has a `callback_url`: its state and its log."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base


class DeliveryState(StrEnum):
    PENDING = "pending"  # due at next_attempt_at (an attempt may be under way: locked_until)
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # out of attempts, or a destination that is not allowed


_STATE_VALUES = ", ".join(f"'{s.value}'" for s in DeliveryState)


class WebhookDelivery(Base):
    """One row per conversation: made when the conversation reaches a terminal status."""

    __tablename__ = "webhook_delivery"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(Text)
    # The Standard Webhooks `webhook-id`: the same on every attempt, so receivers deduplicate.
    webhook_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), server_default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column(server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column()
    # While an attempt is under way: no other worker starts one before this time.
    locked_until: Mapped[datetime | None] = mapped_column()
    # Every attempt: {"attempt", "at", "status_code", "error", "duration_ms"}.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    __table_args__ = (
        CheckConstraint(f"state IN ({_STATE_VALUES})", name="state"),
        CheckConstraint("attempts >= 0", name="attempts"),
        # The sweeper's scan: deliveries still to make.
        Index(
            "ix_webhook_delivery_pending",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
    )
