"""The inbound queue on SQLite: the spool, a file of its own beside the database.

SQLite has one writer per database file. With the raw bytes going into the main database, an
SMTP session waiting for its ``250`` also waited for the pipeline's write transaction (tens of
milliseconds of Python work), and the two sides took turns on one core each. The spool gives
the accept path its own file, its own write lock and its own fsync, like Postfix's incoming
queue: "store raw, fsync, 250" never waits for the pipeline. Every source writes here: SMTP,
LMTP, ``deliver``, IMAP and ``maild quarantine retry``.

A message is claimed in the transaction that processes it, by its insert into ``inbound``
(one upsert: a digest already there and no longer ``pending`` means an earlier run got it),
and deleted from the spool after that commits. A crash in between leaves it in both; the
next claim finds its digest done and only deletes it, so nothing is processed twice and
nothing is lost. A worker's deaths on a message are counted in the spool row (``attempts``).

The spool is a queue file, not part of the schema: its one table is created (or brought up to
date) on open. ``inbound`` rows left ``pending`` (by versions that queued ``deliver`` and IMAP
mail there or moved the spool there on stop, or a retry cut short) are taken into the spool
when the daemon starts (:meth:`SpoolQueue.adopt`), and processed in turn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from maild.core.clock import Clock, system_clock
from maild.core.errors import CannotCreate
from maild.ingest.queue import (
    COLUMNS,
    INBOUND,
    MAX_BATCH_BYTES,
    Entry,
    Incoming,
    Queued,
    answers,
    digest,
    pick_batch,
    queue_row,
    thread_keys_of,
)
from maild.store.db import Database, sqlite_path
from maild.store.direct import Statement
from maild.threading.rawids import inherit_thread_keys, parent_ids

log = logging.getLogger(__name__)

_META = MetaData()
SPOOL = Table(
    "spool",
    _META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("source", String(16), nullable=False),
    Column("envelope_from", String(512)),
    Column("recipients", Text, nullable=False),
    Column("digest", String(64), nullable=False, index=True),
    Column("message_id", String(998), index=True),
    Column("size", Integer, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("thread_key", Integer, nullable=False),  # see rawids.thread_key: shards by thread
    Column("attempts", Integer, nullable=False, server_default="0"),  # worker deaths on it
    sqlite_autoincrement=True,  # a spool id is never reused, so "queued as S12" stays unique
)
_S = SPOOL.c
_PUT = insert(SPOOL).returning(_S.id, sort_by_parameter_order=True)
# The copies already queued, by digest: built once, they run for every accepted batch.
_KNOWN_INBOUND = select(INBOUND.c.digest, INBOUND.c.id).where(
    INBOUND.c.digest.in_(bindparam("digests", expanding=True))
)
_KNOWN_SPOOLED = select(_S.digest, _S.id).where(_S.digest.in_(bindparam("digests", expanding=True)))
# A batch's rows, and forgetting them once processed: once a batch, built once too.
_ROWS = select(SPOOL).where(_S.id.in_(bindparam("ids", expanding=True))).order_by(_S.id)
_FORGET = delete(SPOOL).where(_S.id.in_(bindparam("ids", expanding=True)))
# 1: digests in one line-ending form (queue.digest); a spool of version 0 is re-digested.
SPOOL_VERSION = 1
# The claim. A row left ``pending`` in inbound (a retry, an older version's queue) is taken
# over; a digest there in any other state was processed already: no row comes back.
_INSERT_INBOUND = sqlite_insert(INBOUND)
_CLAIM = Statement(
    _INSERT_INBOUND.on_conflict_do_update(
        index_elements=[INBOUND.c.digest],
        set_={
            k: _INSERT_INBOUND.excluded[k] for k in ("state", "error", "processed_at", "attempts")
        },
        where=INBOUND.c.state == "pending",
    ).returning(INBOUND.c.id)
)


def spool_path(storage_url: str) -> Path | None:
    """``var/maild.db`` spools into ``var/maild.db.spool``; None for PostgreSQL or :memory:."""
    path = sqlite_path(storage_url) if storage_url.startswith("sqlite") else None
    return path.with_name(path.name + ".spool") if path is not None else None


def _from_inbound() -> list[Any]:
    """The columns of an ``inbound`` row as a spool row (old rows may lack a thread key)."""
    key = func.coalesce(INBOUND.c.thread_key, INBOUND.c.id).label("thread_key")
    return [INBOUND.c[k] for k in COLUMNS if k != "thread_key"] + [key]


def _redigest(conn: Connection) -> None:
    """Give rows spooled by an earlier version today's digest, so the claim still finds the
    copy of each that may already be in ``inbound``."""
    for row_id, old, raw in conn.execute(select(_S.id, _S.digest, _S.raw)).all():
        new = digest(bytes(raw))
        if new != old:
            conn.execute(update(SPOOL).where(_S.id == row_id).values(digest=new))


class SpoolQueue:
    """The spool file: WAL, ``synchronous=FULL`` and its own flock, like the main database."""

    prefix = "S"

    def __init__(self, path: Path, main: Database) -> None:
        self.path = path
        self.main = main
        self.db = Database(f"sqlite:///{path}")
        try:
            self._upgrade()
        except DBAPIError as exc:
            self.db.dispose()
            raise CannotCreate("spool", path, str(exc.orig).splitlines()[0]) from exc

    def _upgrade(self) -> None:
        """Create the table, or bring one an earlier version wrote up to date (its rows stay),
        under the spool's write lock: ``deliver`` processes open it side by side."""
        with self.db.write() as s:
            conn = s.connection()
            _META.create_all(conn)
            have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(spool)")}
            if "thread_key" not in have:  # those rows are shared out by id, as before
                conn.exec_driver_sql(
                    "ALTER TABLE spool ADD COLUMN thread_key INTEGER NOT NULL DEFAULT 0"
                )
                conn.exec_driver_sql("UPDATE spool SET thread_key = id")
            if "attempts" not in have:
                conn.exec_driver_sql(
                    "ALTER TABLE spool ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"
                )
            for index in SPOOL.indexes:
                index.create(conn, checkfirst=True)
            if conn.exec_driver_sql("PRAGMA user_version").scalar_one() < SPOOL_VERSION:
                _redigest(conn)
                conn.exec_driver_sql(f"PRAGMA user_version = {SPOOL_VERSION}")

    def adopt(self) -> int:
        """Spool the ``inbound`` rows left ``pending`` that the spool does not hold yet (oldest
        first); the claim then takes their rows over. Returns how many."""
        with self.main.session() as s:
            rows = s.execute(
                select(*_from_inbound(), INBOUND.c.attempts)
                .where(INBOUND.c.state == "pending")
                .order_by(INBOUND.c.received_at, INBOUND.c.id)
            ).all()
        if not rows:
            return 0
        with self.db.write() as s:
            conn = s.connection()
            held = set(conn.execute(select(_S.digest)).scalars())
            fresh = [dict(r._mapping) for r in rows if r.digest not in held]
            if fresh:
                conn.execute(insert(SPOOL), fresh)
        log.info("spool: %d message(s) waiting in inbound taken into the spool", len(fresh))
        return len(fresh)

    def put(self, items: Sequence[Incoming], clock: Clock = system_clock) -> list[Queued]:
        """Commit every item in one transaction (group commit); answer duplicates as such.

        A duplicate is a digest already in ``inbound`` (read without the main write lock: WAL
        readers never wait) or already spooled. A copy that slips past both (processed between
        the two looks) is caught by the claim, which is the final word.
        """
        now = clock()
        rows = [queue_row(i, now) for i in items]
        parents = [parent_ids(i.raw) for i in items]
        wanted = [p for ids in parents for p in ids]
        digests = list({str(r["digest"]) for r in rows})
        known: dict[str, Queued] = {}
        keys: dict[str, int] = {}
        try:
            with self.main.session() as s:
                conn = s.connection()
                found = conn.execute(_KNOWN_INBOUND, {"digests": digests})
                known.update((str(d), Queued(int(i), True)) for d, i in found)
                keys = thread_keys_of(conn, INBOUND, wanted)
        except DBAPIError as exc:
            # Only an answer's "(duplicate)" note depends on this look: the spool still takes
            # the mail while the main database is in trouble, and the claim dedupes it.
            log.warning("spool: duplicate check skipped, database unavailable: %s", exc.orig)
        with self.db.write() as s:
            conn = s.connection()
            found = conn.execute(_KNOWN_SPOOLED, {"digests": digests})
            for d, i in found:
                known.setdefault(str(d), Queued(int(i), True, "S"))
            keys.update(thread_keys_of(conn, SPOOL, wanted))
            inherit_thread_keys(rows, parents, keys)
            fresh = list({str(r["digest"]): r for r in rows if r["digest"] not in known}.values())
            ids = conn.execute(_PUT, fresh).scalars().all() if fresh else []
            new = {str(r["digest"]): int(i) for r, i in zip(fresh, ids, strict=True)}
        return answers(rows, known, new, "S")

    def take(
        self,
        limit: int,
        max_bytes: int = MAX_BATCH_BYTES,
        shard: tuple[int, int] = (0, 1),
        ids: Sequence[int] | None = None,
    ) -> tuple[list[Entry], bool]:
        """The oldest spooled rows of this shard (or just ``ids``), at least one however big,
        without removing them, and whether more may be waiting behind them."""
        with self.db.session() as s:
            stmt = select(_S.id, _S.size)
            if ids is not None:
                stmt = stmt.where(_S.id.in_(list(ids)))
            elif shard[1] > 1:
                stmt = stmt.where(_S.thread_key % shard[1] == shard[0])
            sizes = ((int(i), int(n)) for i, n in s.execute(stmt.order_by(_S.id).limit(limit)))
            chosen, more = pick_batch(sizes, limit, max_bytes)
            if not chosen:
                return [], False
            rows = s.execute(_ROWS, {"ids": chosen})
            return [Entry(int(r.id), r._mapping) for r in rows], more and ids is None

    def claim(
        self, conn: Connection, entry: Entry, state: str, error: str | None, now: datetime
    ) -> int | None:
        """Insert (or take over) the message's ``inbound`` row as ``state``; None if an earlier
        run processed it already. This run is one more attempt."""
        return self._claim(conn, entry, state, error, now, int(entry.row["attempts"]) + 1)

    def _claim(
        self,
        conn: Connection,
        entry: Entry,
        state: str,
        error: str | None,
        now: datetime,
        attempts: int,
    ) -> int | None:
        row = {k: entry.row[k] for k in COLUMNS}
        row.update(state=state, error=error, processed_at=now, attempts=attempts)
        iid = _CLAIM.scalar(conn, row)
        return int(iid) if iid is not None else None

    def done(self, entries: Sequence[Entry]) -> None:
        if entries:
            with self.db.write() as s:
                ids = [e.ident for e in entries]
                s.connection().execute(_FORGET, {"ids": ids})

    def quarantine(self, ident: int, reason: str, now: datetime) -> bool:
        """Into ``inbound`` as quarantined, raw bytes and reason kept; False if it is no
        longer waiting (processed after all)."""
        entries, _ = self.take(1, ids=[ident])
        if not entries:
            return False
        (entry,) = entries
        with self.main.write() as s:
            conn = s.connection()
            iid = self._claim(conn, entry, "quarantined", reason, now, int(entry.row["attempts"]))
        self.done(entries)
        return iid is not None

    def attempt(self, ident: int) -> int:
        """One more attempt (a worker died on it): the count so far, 0 if no longer waiting."""
        with self.db.write() as s:
            stmt = (
                update(SPOOL)
                .where(_S.id == ident)
                .values(attempts=_S.attempts + 1)
                .returning(_S.attempts)
            )
            attempts = s.connection().execute(stmt).scalar()
        return int(attempts or 0)

    def retry(self, inbound_id: int) -> int | None:
        """A quarantined message back in the spool (its ``inbound`` row ``pending`` again,
        attempts forgotten; the claim takes the row over): its spool id."""
        with self.main.write() as s:
            moved = s.connection().execute(
                update(INBOUND)
                .where(INBOUND.c.id == inbound_id, INBOUND.c.state == "quarantined")
                .values(state="pending", attempts=0)
            )
            row = (
                s.connection()
                .execute(select(*_from_inbound()).where(INBOUND.c.id == inbound_id))
                .first()
            )
        if not moved.rowcount or row is None:
            return None
        with self.db.write() as s:
            return int(s.connection().execute(_PUT, [dict(row._mapping)]).scalar_one())

    def count(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(SPOOL)) or 0)

    def dispose(self) -> None:
        self.db.dispose()
