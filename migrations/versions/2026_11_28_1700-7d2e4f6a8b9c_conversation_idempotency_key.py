"""conversation idempotency key: a retried submission finds the conversation it made

Revision ID: 7d2e4f6a8b9c
Revises: 5c1d2e3f4a5b
Create Date: 2026-11-28 17:00:00.000000+00:00

Downgrade on a database with data: it runs and keeps every conversation; only the keys and
body fingerprints are dropped, so a client retrying after a downgrade gets a new conversation
instead of the one its key made. Tested by tests/migrations/test_migrations.py.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d2e4f6a8b9c"
down_revision: str | None = "5c1d2e3f4a5b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversation", sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.add_column("conversation", sa.Column("request_hash", sa.String(64), nullable=True))
    op.create_index(
        "uq_conversation_user_id_idempotency_key",
        "conversation",
        ["user_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_conversation_user_id_idempotency_key",
        table_name="conversation",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_column("conversation", "request_hash")
    op.drop_column("conversation", "idempotency_key")
