"""api keys and the per-user unfinished-conversation index

Revision ID: 5c1d2e3f4a5b
Revises: 9ae7be97a623
Create Date: 2026-11-28 14:00:00.000000+00:00

Downgrade on a database with data: it runs, and keeps every user, model version and
conversation as it is. It drops the api_key table, so every user key is gone for good: after
a downgrade (and after upgrading again) only the admin key from the environment works until
users are issued new keys. Back up api_key first if the keys must survive a round trip.
Tested by tests/migrations/test_migrations.py.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1d2e3f4a5b"
down_revision: str | None = "9ae7be97a623"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_api_key_user_id_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
    )
    op.create_index("ix_api_key_user_id", "api_key", ["user_id"], unique=False)
    op.create_index("uq_api_key_key_hash", "api_key", ["key_hash"], unique=True)
    op.create_index(
        "ix_conversation_user_id_unfinished",
        "conversation",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )


def downgrade() -> None:
    # Dropping the table revokes every user key: only the admin key works after a downgrade.
    op.drop_index(
        "ix_conversation_user_id_unfinished",
        table_name="conversation",
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )
    op.drop_index("uq_api_key_key_hash", table_name="api_key")
    op.drop_index("ix_api_key_user_id", table_name="api_key")
    op.drop_table("api_key")
