"""Addresses a bounce named as undeliverable: no mail to them until they write again.

Revision ID: h9bounce
Revises: h10out
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "h9bounce"
down_revision = "h10out"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "undeliverable",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ticket_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("address"),
    )


def downgrade() -> None:
    op.drop_table("undeliverable")
