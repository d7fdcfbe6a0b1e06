"""Outbox leases name their owner, and owners keep a heartbeat (crash-safe sending).

Revision ID: h10out
Revises: h10edge
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "h10out"
down_revision = "h10edge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("refused", sa.Text(), nullable=True))
    op.create_table(
        "outbox_senders",
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbox_senders")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("refused")
        batch.drop_column("claimed_by")
