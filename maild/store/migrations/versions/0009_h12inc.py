"""Mass incidents: a request's problem, what it was merged into, its normalised words, and
what the lead and the agents were last told about a problem.

Revision ID: h12inc
Revises: h13kb
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "h12inc"
down_revision = "h13kb"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(
            sa.Column(
                "problem_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch.add_column(
            sa.Column(
                "merged_into", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch.add_column(sa.Column("fingerprint", sa.Text(), nullable=True))
        batch.add_column(sa.Column("incident_told", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("digest_sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key("fk_tickets_problem_id", "tickets", ["problem_id"], ["id"])
        batch.create_foreign_key("fk_tickets_merged_into", "tickets", ["merged_into"], ["id"])
        batch.create_index("ix_tickets_problem", ["problem_id"])
        batch.create_index("ix_tickets_created", ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_created")
        batch.drop_index("ix_tickets_problem")
        batch.drop_constraint("fk_tickets_merged_into", type_="foreignkey")
        batch.drop_constraint("fk_tickets_problem_id", type_="foreignkey")
        for name in ("digest_sent_at", "incident_told", "fingerprint", "merged_into", "problem_id"):
            batch.drop_column(name)
