"""The inbound queue on PostgreSQL: the ``inbound`` table itself, rows in state ``pending``.

PostgreSQL has row locks and no single writer, so the accept path inserts into ``inbound``
directly and a claim is the move out of ``pending`` (see maild/ingest/queue.py for the
contract). It works on SQLite too (tests, an in-memory database), where the daemon uses the
spool instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from maild.core.clock import Clock, system_clock
from maild.ingest.queue import (
    INBOUND,
    MAX_BATCH_BYTES,
    Entry,
    Incoming,
    Queued,
    answers,
    pick_batch,
    queue_row,
    thread_keys_of,
)
from maild.store.db import Database
from maild.store.direct import Statement
from maild.threading.rawids import inherit_thread_keys, parent_ids

_C = INBOUND.c
_INSERT = insert(INBOUND).returning(_C.id, sort_by_parameter_order=True)
# The copies already queued, by digest: built once, it runs for every accepted batch.
_KNOWN = select(_C.digest, _C.id).where(_C.digest.in_(bindparam("digests", expanding=True)))
_FRESH = {"state": "pending", "attempts": 0, "processed_at": None, "error": None}
# The claim: out of ``pending``, once. ``tries`` is 1 when a worker processes it (an attempt),
# 0 when the supervisor quarantines it (its attempts were counted as the worker died).
_CLAIM = Statement(
    update(INBOUND)
    .where(_C.id == bindparam("iid"), _C.state == "pending")
    .values(
        state=bindparam("state"),
        error=bindparam("error"),
        processed_at=bindparam("at"),
        attempts=_C.attempts + bindparam("tries"),
    )
)


class TableQueue:
    """``inbound`` rows in state ``pending``, shared by thread key, oldest first."""

    prefix = ""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, items: Sequence[Incoming], clock: Clock = system_clock) -> list[Queued]:
        """Commit every item in one transaction (group commit); dedupe by digest."""
        try:
            return self._put(items, clock)
        except IntegrityError:
            # Another process stored one of these between our check and our insert.
            return [q for item in items for q in self._put([item], clock)]

    def _put(self, items: Sequence[Incoming], clock: Clock) -> list[Queued]:
        now = clock()
        rows = [queue_row(i, now) | _FRESH for i in items]  # digests before the write lock
        parents = [parent_ids(i.raw) for i in items]
        with self.db.write() as s:
            conn = s.connection()
            wanted = [p for ids in parents for p in ids]
            inherit_thread_keys(rows, parents, thread_keys_of(conn, INBOUND, wanted))
            digests = list({str(r["digest"]) for r in rows})
            found = conn.execute(_KNOWN, {"digests": digests})
            known = {str(d): Queued(int(i), True) for d, i in found}
            fresh = list({str(r["digest"]): r for r in rows if r["digest"] not in known}.values())
            ids = conn.execute(_INSERT, fresh).scalars().all() if fresh else []
            new = {str(r["digest"]): int(i) for r, i in zip(fresh, ids, strict=True)}
        return answers(rows, known, new)

    def take(
        self,
        limit: int,
        max_bytes: int = MAX_BATCH_BYTES,
        shard: tuple[int, int] = (0, 1),
        ids: Sequence[int] | None = None,
    ) -> tuple[list[Entry], bool]:
        """The oldest pending rows of this shard (or just ``ids``), and whether more may wait."""
        with self.db.read() as s:
            stmt = select(_C.id, _C.size).where(_C.state == "pending")
            if ids is not None:
                stmt = stmt.where(_C.id.in_(list(ids)))
            elif shard[1] > 1:
                stmt = stmt.where(func.coalesce(_C.thread_key, _C.id) % shard[1] == shard[0])
            stmt = stmt.order_by(_C.received_at, _C.id).limit(limit)
            sizes = ((int(i), int(n)) for i, n in s.execute(stmt))
            chosen, more = pick_batch(sizes, limit, max_bytes)
            if not chosen:
                return [], False
            rows = s.execute(
                select(_C.id, _C.raw, _C.source, _C.envelope_from, _C.received_at)
                .where(_C.id.in_(chosen))
                .order_by(_C.received_at, _C.id)
            )
            return [Entry(int(r.id), r._mapping) for r in rows], more and ids is None

    def claim(
        self, conn: Connection, entry: Entry, state: str, error: str | None, now: datetime
    ) -> int | None:
        params = {"iid": entry.ident, "state": state, "error": error, "at": now, "tries": 1}
        return entry.ident if _CLAIM.execute(conn, params) else None

    def done(self, entries: Sequence[Entry]) -> None:
        """Nothing to forget: the claim moved the rows out of ``pending``."""

    def quarantine(self, ident: int, reason: str, now: datetime) -> bool:
        params = {"iid": ident, "state": "quarantined", "error": reason, "at": now, "tries": 0}
        with self.db.write() as s:
            return bool(_CLAIM.execute(s, params))

    def attempt(self, ident: int) -> int:
        """One more attempt (a worker died on it): the count so far, 0 if no longer waiting."""
        with self.db.write() as s:
            attempts = s.scalar(
                update(INBOUND)
                .where(_C.id == ident, _C.state == "pending")
                .values(attempts=_C.attempts + 1)
                .returning(_C.attempts)
            )
        return int(attempts or 0)

    def retry(self, inbound_id: int) -> int | None:
        """A quarantined row back to ``pending``, its attempts forgotten; its queue id."""
        with self.db.write() as s:
            result = s.connection().execute(
                update(INBOUND)
                .where(_C.id == inbound_id, _C.state == "quarantined")
                .values(state="pending", attempts=0)
            )
        return inbound_id if result.rowcount else None

    def adopt(self) -> int:
        """Nothing to take over: ``pending`` rows are this queue."""
        return 0

    def count(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).where(_C.state == "pending")) or 0)

    def dispose(self) -> None:
        """The database is the caller's."""
