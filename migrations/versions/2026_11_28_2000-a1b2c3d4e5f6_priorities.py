"""priorities: a conversation's priority, a key's ceiling, pending rows by priority

Revision ID: a1b2c3d4e5f6
Revises: 8e3f5a7b9c1d
Create Date: 2026-11-28 20:00:00.000000+00:00

Both columns have a default, so existing rows read as `interactive` (what every conversation
was) and adding them rewrites no table. Downgrade on a database with data: it runs and keeps
every row; only the priorities are dropped. Tested by tests/migrations/test_migrations.py.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a1b2c3d4e5f6"
down_revision: str | None = "8e3f5a7b9c1d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VALUES = "('interactive', 'batch')"


def upgrade() -> None:
    op.add_column(
        "conversation",
        sa.Column("priority", sa.String(16), server_default="interactive", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_conversation_priority"), "conversation", f"priority IN {_VALUES}"
    )
    op.add_column(
        "api_key",
        sa.Column("max_priority", sa.String(16), server_default="interactive", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_api_key_max_priority"), "api_key", f"max_priority IN {_VALUES}"
    )
    op.create_index(
        "ix_conversation_pending_priority",
        "conversation",
        ["priority", "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_conversation_pending_priority",
        table_name="conversation",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_constraint(op.f("ck_api_key_max_priority"), "api_key", type_="check")
    op.drop_column("api_key", "max_priority")
    op.drop_constraint(op.f("ck_conversation_priority"), "conversation", type_="check")
    op.drop_column("conversation", "priority")
