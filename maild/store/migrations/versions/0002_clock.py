"""The clock: status times, survey, rating, SLA warnings, reminders, hold department.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMES = (
    "status_since",
    "solved_at",
    "closed_at",
    "survey_due_at",
    "survey_sent_at",
    "rated_at",
    "sla_warned_at",
    "sla_breached_at",
    "reminded_at",
    "last_customer_at",
)


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        for name in TIMES:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("rating", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("rating_comment", sa.Text(), nullable=True))
        batch.add_column(sa.Column("hold_department", sa.String(length=128), nullable=True))
        batch.create_index("ix_tickets_survey_due", ["survey_due_at"])


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_survey_due")
        for name in (*TIMES, "rating", "rating_comment", "hold_department"):
            batch.drop_column(name)
