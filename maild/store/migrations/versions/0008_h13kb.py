"""Knowledge: articles with their history, and the full-text index of requests and articles.

On SQLite the index is FTS5 virtual tables of Snowball stems (raw DDL, filled here for the
mail already stored); on PostgreSQL, GIN indexes over russian and english tsvectors.

Revision ID: h13kb
Revises: h9bounce
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from maild.knowledge import index

revision = "h13kb"
down_revision = "h9bounce"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "kb_articles",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("ticket_id", BigId, sa.ForeignKey("tickets.id"), nullable=True),
        sa.Column("author", sa.String(320), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "kb_article_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("article_id", BigId, sa.ForeignKey("kb_articles.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("ticket_id", BigId, sa.ForeignKey("tickets.id"), nullable=True),
        sa.Column("author", sa.String(320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_kb_article_versions_article", "kb_article_versions", ["article_id", "version"]
    )
    conn = op.get_bind()
    index.create(conn)
    index.rebuild(conn)  # the mail stored before this revision (SQLite; PostgreSQL builds it)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in index.FTS_TABLES:
            op.execute(f"DROP TABLE IF EXISTS {table}")
    else:
        op.execute("DROP INDEX IF EXISTS ix_messages_fts")
    op.drop_index("ix_kb_article_versions_article", "kb_article_versions")
    op.drop_table("kb_article_versions")
    op.drop_table("kb_articles")
