"""PostgreSQL: the raw and text columns of the hot path compressed with lz4, not pglz.

Every message is stored raw (``inbound.raw``, up to the size limit with its attachments), as
text (``messages.text``, ``messages.html``), and as each mail sent about it (``outbox.raw``),
and attachments once more (``blobs.data``). The server compresses such values (TOAST) with
pglz by default, on the write path of every message: measured on this 2-core machine, an
INSERT of a 140 KB mail took 4.3 ms with pglz and 1.6 ms with lz4 (and 141 KB against
150 KB on disk; a 5 KB text mail 0.67 against 1.15 ms, 0.8 against 1.6 KB). Values already
stored keep their compression; both are read alike. A server without lz4 (built without it,
or older than PostgreSQL 14) is left as it is. SQLite does not compress.

Revision ID: h11lz4
Revises: h13prefix
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "h11lz4"
down_revision = "h13prefix"
branch_labels = None
depends_on = None

COLUMNS = (
    ("inbound", "raw"),
    ("messages", "text"),
    ("messages", "html"),
    ("outbox", "raw"),
    ("blobs", "data"),
)


def _lz4_available() -> bool:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
    ).first()
    return found is not None


def _set(method: str) -> None:
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def upgrade() -> None:
    if _lz4_available():
        _set("lz4")


def downgrade() -> None:
    if _lz4_available():
        _set("default")
