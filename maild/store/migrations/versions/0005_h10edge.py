"""Inbound digests in one line-ending form (see maild.ingest.queue.digest).

The first versions hashed a message with CRLF read as LF but kept the line ends at its very
end, so the same mail through a pipe ("...\\n") and from a bare-LF SMTP client ("...\\n\\r\\n")
had two digests and became two requests. A message that ends in exactly one line end (nearly
all) has the same digest in both forms; only the others are read and given the new one, so a
copy arriving after the upgrade is still recognised. Where the new digest already belongs to
another row (the very duplicate this fixes), the old one is kept: the column is unique.

Revision ID: h10edge
Revises: h9loop
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from maild.ingest.queue import digest

revision = "h10edge"
down_revision = "h9loop"
branch_labels = None
depends_on = None

CHUNK = 500
_INBOUND = sa.table(
    "inbound", sa.column("id", sa.Integer), sa.column("digest"), sa.column("raw", sa.LargeBinary)
)


def _tail(n: int) -> Any:
    """The last ``n`` bytes of ``raw`` (substr works on blobs and bytea alike)."""
    raw = _INBOUND.c.raw
    return sa.func.substr(raw, sa.func.length(raw) - (n - 1), n)


def _suspects(conn: sa.Connection) -> list[int]:
    """Ids of the rows that do not end in exactly one line end."""

    def tail_is(n: int, value: bytes) -> Any:
        return _tail(n) == sa.literal(value, sa.LargeBinary)

    ends = sa.or_(sa.not_(tail_is(1, b"\n")), tail_is(2, b"\n\n"), tail_is(3, b"\n\r\n"))
    stmt = sa.select(_INBOUND.c.id).where(ends).order_by(_INBOUND.c.id)
    return [int(i) for i in conn.execute(stmt).scalars()]


def _redigest(conn: sa.Connection, ids: Sequence[int]) -> None:
    rows = conn.execute(
        sa.select(_INBOUND.c.id, _INBOUND.c.digest, _INBOUND.c.raw).where(_INBOUND.c.id.in_(ids))
    )
    wanted: dict[int, str] = {}
    for row_id, old, raw in rows:
        new = digest(bytes(raw))
        if new != old:
            wanted[int(row_id)] = new
    found = sa.select(_INBOUND.c.digest).where(_INBOUND.c.digest.in_(set(wanted.values())))
    taken = set(conn.execute(found).scalars()) if wanted else set()
    for row_id, new in wanted.items():
        if new not in taken:
            taken.add(new)
            conn.execute(sa.update(_INBOUND).where(_INBOUND.c.id == row_id).values(digest=new))


def upgrade() -> None:
    conn = op.get_bind()
    ids = _suspects(conn)
    for at in range(0, len(ids), CHUNK):
        _redigest(conn, ids[at : at + CHUNK])


def downgrade() -> None:
    """Nothing to undo: the old code dedupes as before against digests of either form."""
