from __future__ import annotations

from sqlalchemy import CheckConstraint, Float, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Record

# One active registration per (provider, model_name, version_tag).
ACTIVE_TRIPLE_UNIQUE_INDEX = "uq_model_version_active_triple"


class ModelVersion(Record):
    __tablename__ = "model_version"

    provider: Mapped[str] = mapped_column(String(128))
    model_name: Mapped[str] = mapped_column(String(128))
    version_tag: Mapped[str] = mapped_column(String(128))
    # Optional bounds the worker applies to every conversation on this model.
    max_tokens_cap: Mapped[int | None] = mapped_column(Integer)
    default_temperature: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index(
            ACTIVE_TRIPLE_UNIQUE_INDEX,
            "provider",
            "model_name",
            "version_tag",
            unique=True,
            postgresql_where=text("is_active"),
        ),
        Index("ix_model_version_created_at", "created_at"),
        CheckConstraint("max_tokens_cap IS NULL OR max_tokens_cap >= 1", name="max_tokens_cap"),
        CheckConstraint(
            "default_temperature IS NULL OR default_temperature BETWEEN 0 AND 2",
            name="default_temperature",
        ),
    )
