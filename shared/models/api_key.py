from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, IdMixin
from shared.models.conversation import PRIORITY_VALUES, Priority


class ApiKey(IdMixin, Base):
    """A user's API key. Only its SHA-256 is stored; the secret is shown once, at creation."""

    __tablename__ = "api_key"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("user.id"))
    name: Mapped[str | None] = mapped_column(String(128))
    # The first characters of the key, kept so a person can tell their keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column()
    # The highest priority this key may submit at; a higher one asked for is lowered to it.
    max_priority: Mapped[str] = mapped_column(String(16), server_default=Priority.INTERACTIVE.value)

    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (
        CheckConstraint(f"max_priority IN ({PRIORITY_VALUES})", name="max_priority"),
        # Authentication looks a key up by its hash: one index probe, never a scan.
        Index("uq_api_key_key_hash", "key_hash", unique=True),
        Index("ix_api_key_user_id", "user_id"),
    )
