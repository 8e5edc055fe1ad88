"""create user, model_version and conversation

Revision ID: 9ae7be97a623
Revises:
Create Date: 2026-11-25 19:52:12.677272+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9ae7be97a623"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_version",
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("version_tag", sa.String(length=128), nullable=False),
        sa.Column("max_tokens_cap", sa.Integer(), nullable=True),
        sa.Column("default_temperature", sa.Float(), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.CheckConstraint(
            "default_temperature IS NULL OR default_temperature BETWEEN 0 AND 2",
            name=op.f("ck_model_version_default_temperature"),
        ),
        sa.CheckConstraint(
            "max_tokens_cap IS NULL OR max_tokens_cap >= 1",
            name=op.f("ck_model_version_max_tokens_cap"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
    )
    op.create_index("ix_model_version_created_at", "model_version", ["created_at"], unique=False)
    op.create_index(
        "uq_model_version_active_triple",
        "model_version",
        ["provider", "model_name", "version_tag"],
        unique=True,
        postgresql_where=sa.text("is_active"),
    )
    op.create_table(
        "user",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
    )
    op.create_index("ix_user_created_at", "user", ["created_at"], unique=False)
    op.create_index("uq_user_email_lower", "user", [sa.literal_column("lower(email)")], unique=True)
    op.create_table(
        "conversation",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("model_version_id", sa.UUID(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("system_instruction", sa.Text(), nullable=True),
        sa.Column("context", sa.Text(), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("top_p", sa.Float(), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("prompt_version", sa.String(length=64), nullable=True),
        sa.Column("finish_reason", sa.String(length=64), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("queue_wait_ms", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_conversation_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_conversation_attempts")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_conversation_model_version_id_model_version"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_conversation_user_id_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation")),
    )
    op.create_index("ix_conversation_created_at", "conversation", ["created_at"], unique=False)
    op.create_index(
        "ix_conversation_model_version_id", "conversation", ["model_version_id"], unique=False
    )
    op.create_index(
        "ix_conversation_status_created_at", "conversation", ["status", "created_at"], unique=False
    )
    op.create_index(
        "ix_conversation_unfinished",
        "conversation",
        ["status", "lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )
    op.create_index(
        "ix_conversation_user_id_created_at",
        "conversation",
        ["user_id", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_conversation_user_id_created_at", table_name="conversation")
    op.drop_index(
        "ix_conversation_unfinished",
        table_name="conversation",
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )
    op.drop_index("ix_conversation_status_created_at", table_name="conversation")
    op.drop_index("ix_conversation_model_version_id", table_name="conversation")
    op.drop_index("ix_conversation_created_at", table_name="conversation")
    op.drop_table("conversation")
    op.drop_index("uq_user_email_lower", table_name="user")
    op.drop_index("ix_user_created_at", table_name="user")
    op.drop_table("user")
    op.drop_index(
        "uq_model_version_active_triple",
        table_name="model_version",
        postgresql_where=sa.text("is_active"),
    )
    op.drop_index("ix_model_version_created_at", table_name="model_version")
    op.drop_table("model_version")
