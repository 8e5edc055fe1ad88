from __future__ import annotations

from sqlalchemy import CheckConstraint, Index, Integer, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Record

MAX_QUEUE_WEIGHT = 100


class User(Record):
    __tablename__ = "user"

    email: Mapped[str] = mapped_column(String(320))
    # The user's share of the workers while other users' work waits too: weight 2 starts
    # twice as many conversations as weight 1 (see docs/architecture.md, "Scheduling").
    queue_weight: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    __table_args__ = (
        Index("ix_user_created_at", "created_at"),
        CheckConstraint(f"queue_weight BETWEEN 1 AND {MAX_QUEUE_WEIGHT}", name="queue_weight"),
    )


# Emails are unique whatever their case; a soft-deleted user keeps its address.
EMAIL_UNIQUE_INDEX = "uq_user_email_lower"
Index(EMAIL_UNIQUE_INDEX, func.lower(User.email), unique=True)
