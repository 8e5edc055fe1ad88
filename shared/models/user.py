from __future__ import annotations

from sqlalchemy import Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Record


class User(Record):
    __tablename__ = "user"

    email: Mapped[str] = mapped_column(String(320))

    __table_args__ = (Index("ix_user_created_at", "created_at"),)


# Emails are unique whatever their case; a soft-deleted user keeps its address.
EMAIL_UNIQUE_INDEX = "uq_user_email_lower"
Index(EMAIL_UNIQUE_INDEX, func.lower(User.email), unique=True)
