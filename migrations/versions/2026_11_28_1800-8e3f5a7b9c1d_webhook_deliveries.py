"""webhook deliveries: a callback URL per conversation and the log of its delivery

Revision ID: 8e3f5a7b9c1d
Revises: 7d2e4f6a8b9c
Create Date: 2026-11-28 18:00:00.000000+00:00

Downgrade on a database with data: it runs and keeps every conversation; the callback URLs and
the delivery log are dropped, so deliveries not yet made are never made (a client that needs
them polls). Upgrading again brings the column back empty and the log with no rows. Tested by
tests/migrations/test_migrations.py.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "8e3f5a7b9c1d"
down_revision: str | None = "7d2e4f6a8b9c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversation", sa.Column("callback_url", sa.Text(), nullable=True))
    op.create_index(
        "ix_conversation_completed_at_callback",
        "conversation",
        ["completed_at"],
        postgresql_where=sa.text("callback_url IS NOT NULL"),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("conversation_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("webhook_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=True,
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "history",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name=op.f("ck_webhook_delivery_state")
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_delivery_attempts")),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name=op.f("fk_webhook_delivery_conversation_id_conversation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_webhook_delivery")),
    )
    op.create_index(
        "ix_webhook_delivery_pending",
        "webhook_delivery",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_delivery_pending",
        table_name="webhook_delivery",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_table("webhook_delivery")
    op.drop_index(
        "ix_conversation_completed_at_callback",
        table_name="conversation",
        postgresql_where=sa.text("callback_url IS NOT NULL"),
    )
    op.drop_column("conversation", "callback_url")
