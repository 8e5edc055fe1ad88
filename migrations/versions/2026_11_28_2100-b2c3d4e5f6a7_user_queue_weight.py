"""user queue weight: a user's share of the workers while others wait too

Revision ID: b2c3d4e5f6a7
Revises: a1b2c3d4e5f6
Create Date: 2026-11-28 21:00:00.000000+00:00

The column has a default, so every existing user has weight 1 (equal shares, as before) and
adding it rewrites no table. Downgrade on a database with data: it runs and keeps every user;
only the weights are dropped. Tested by tests/migrations/test_migrations.py.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b2c3d4e5f6a7"
down_revision: str | None = "a1b2c3d4e5f6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "user", sa.Column("queue_weight", sa.Integer(), server_default="1", nullable=False)
    )
    op.create_check_constraint(
        op.f("ck_user_queue_weight"), "user", "queue_weight BETWEEN 1 AND 100"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_user_queue_weight"), "user", type_="check")
    op.drop_column("user", "queue_weight")
