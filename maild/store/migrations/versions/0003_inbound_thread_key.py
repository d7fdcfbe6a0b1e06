"""Inbound mail remembers its thread key, so that pipeline workers share mail by thread.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for rows stored before: the workers fall back to the row's id for those.
    with op.batch_alter_table("inbound") as batch:
        batch.add_column(sa.Column("thread_key", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbound") as batch:
        batch.drop_column("thread_key")
