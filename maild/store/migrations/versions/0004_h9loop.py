"""The mail circuit breaker: a request's mail can be held; outbox rows counted per request.

Revision ID: h9loop
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "h9loop"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("mail_held_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("mail_released_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_outbox_ticket", "outbox", ["ticket_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_ticket", table_name="outbox")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("mail_released_at")
        batch.drop_column("mail_held_at")
