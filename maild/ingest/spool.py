"""The SMTP spool: on SQLite, mail accepted over SMTP/LMTP is committed to a file of its own.

SQLite has one writer per database file. With the raw bytes going into the main database, an
SMTP session waiting for its ``250`` also waited for the pipeline's write transaction (tens of
milliseconds of Python work), and the two sides took turns on one core each. The spool gives
the accept path its own file, its own write lock and its own fsync, like Postfix's incoming
queue: "store raw, fsync, 250" never waits for the pipeline.

The pipeline moves spooled mail into ``inbound`` (:func:`import_spool`): one write transaction
in the main database inserts the rows, then the spool rows are deleted. A crash in between
leaves rows in both; the next import finds their digests in ``inbound`` (the column is unique)
and only deletes them, so nothing is processed twice and nothing is lost.

The spool is a queue file, not part of the schema: its one table is created on open, and an
empty spool may be deleted while the daemon is stopped. PostgreSQL needs none of this (row
locks, no single writer), so there the accept path inserts into ``inbound`` directly.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from maild.clock import Clock, system_clock
from maild.errors import CannotCreate
from maild.ingest.accept import (
    INBOUND,
    Incoming,
    Stored,
    digest,
    inbound_row,
    inherit_thread_keys,
    parent_ids,
    thread_keys_of,
)
from maild.store.db import Database, sqlite_path

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
    Column("thread_key", Integer, nullable=False),  # see accept.thread_key: shards by thread
    sqlite_autoincrement=True,  # a spool id is never reused, so "queued as S12" stays unique
)
# What a spool row gives its inbound row (all but the spool's own id).
SPOOL_COLUMNS = (
    "received_at",
    "source",
    "envelope_from",
    "recipients",
    "digest",
    "message_id",
    "size",
    "raw",
    "thread_key",
)
_PUT = insert(SPOOL).returning(SPOOL.c.id, sort_by_parameter_order=True)
# 1: digests in one line-ending form (accept.digest); a spool of version 0 is re-digested.
SPOOL_VERSION = 1


def _redigest(conn: Connection) -> None:
    """Give rows spooled by an earlier version today's digest, so the import still finds the
    copy of each that may already be in ``inbound`` (a clean stop leaves no rows at all)."""
    rows = conn.execute(select(SPOOL.c.id, SPOOL.c.digest, SPOOL.c.raw)).all()
    for row_id, old, raw in rows:
        new = digest(bytes(raw))
        if new != old:
            conn.execute(update(SPOOL).where(SPOOL.c.id == row_id).values(digest=new))


@dataclass(frozen=True)
class Spooled:
    """Committed to the spool; the pipeline gives it an inbound id when it imports it."""

    spool_id: int
    duplicate: bool = False

    @property
    def queue_id(self) -> str:
        return f"S{self.spool_id}"


def pick_batch(
    sizes: Iterable[tuple[int, int]], limit: int, max_bytes: int
) -> tuple[list[int], bool]:
    """Ids (in order) of up to ``limit`` rows of ``(id, size)`` within ``max_bytes`` (at least
    one, however big), and whether more rows may be waiting behind them."""
    chosen: list[int] = []
    total = 0
    for rid, size in sizes:
        if chosen and total + size > max_bytes:
            return chosen, True
        chosen.append(rid)
        total += size
    return chosen, len(chosen) >= limit


def spool_path(storage_url: str) -> Path | None:
    """``var/maild.db`` spools into ``var/maild.db.spool``; None for PostgreSQL or :memory:."""
    path = sqlite_path(storage_url) if storage_url.startswith("sqlite") else None
    return path.with_name(path.name + ".spool") if path is not None else None


def spooled_thread_keys(storage_url: str, ids: Sequence[str]) -> dict[str, int]:
    """Message-ID -> thread key of mail still in the spool, for a source that stores into
    ``inbound`` directly (``deliver``, IMAP): its replies must go to the same worker too.
    Read-only and best effort: no spool file, or trouble reading it, is simply no answer."""
    path = spool_path(storage_url)
    if not ids or path is None or not path.exists():
        return {}
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            marks = ",".join("?" * len(ids))
            rows = con.execute(
                f"SELECT message_id, thread_key FROM spool WHERE message_id IN ({marks}) "
                "ORDER BY id DESC",  # the earliest holder of an id wins
                list(ids),
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        log.warning("spool: thread keys not read: %s", exc)
        return {}
    return {str(mid): int(key) for mid, key in rows}


class Spool:
    """The spool file: WAL, ``synchronous=FULL`` and its own flock, like the main database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Database(f"sqlite:///{path}")
        try:
            _META.create_all(self.db.engine)
            self._upgrade()
        except DBAPIError as exc:
            self.db.dispose()
            raise CannotCreate("spool", path, str(exc.orig).splitlines()[0]) from exc

    def _upgrade(self) -> None:
        """Bring a spool file written by an earlier version up to this table (its rows stay)."""
        with self.db.write() as s:
            conn = s.connection()
            have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(spool)")}
            if "thread_key" not in have:  # those rows are shared out by id, as before
                conn.exec_driver_sql(
                    "ALTER TABLE spool ADD COLUMN thread_key INTEGER NOT NULL DEFAULT 0"
                )
                conn.exec_driver_sql("UPDATE spool SET thread_key = id")
            for index in SPOOL.indexes:
                index.create(conn, checkfirst=True)
            if conn.exec_driver_sql("PRAGMA user_version").scalar_one() < SPOOL_VERSION:
                _redigest(conn)
                conn.exec_driver_sql(f"PRAGMA user_version = {SPOOL_VERSION}")

    @classmethod
    def for_storage(cls, storage_url: str) -> Spool | None:
        path = spool_path(storage_url)
        return cls(path) if path is not None else None

    def put(
        self, main: Database, items: Sequence[Incoming], clock: Clock = system_clock
    ) -> list[Stored | Spooled]:
        """Commit every item in one transaction (group commit); answer duplicates as such.

        A duplicate is a digest already in ``inbound`` (read without the main write lock: WAL
        readers never wait) or already spooled. A copy that slips past both (imported between
        the two looks) is caught by the import, which is the final word.
        """
        rows = [inbound_row(i, clock) for i in items]
        parents = [parent_ids(i.raw) for i in items]
        wanted = [p for ids in parents for p in ids]
        digests = list({str(r["digest"]) for r in rows})
        known: dict[str, Stored | Spooled] = {}
        keys: dict[str, int] = {}
        try:
            with main.session() as s:
                found = s.execute(
                    select(INBOUND.c.digest, INBOUND.c.id).where(INBOUND.c.digest.in_(digests))
                )
                known.update((str(d), Stored(int(i), True)) for d, i in found)
                keys = thread_keys_of(s.connection(), INBOUND, wanted)
        except DBAPIError as exc:
            # Only an answer's "(duplicate)" note depends on this look: the spool still takes
            # the mail while the main database is in trouble, and the import dedupes it.
            log.warning("spool: duplicate check skipped, database unavailable: %s", exc.orig)
        with self.db.write() as s:
            conn = s.connection()
            spooled = conn.execute(
                select(SPOOL.c.digest, SPOOL.c.id).where(SPOOL.c.digest.in_(digests))
            )
            for d, i in spooled:
                known.setdefault(str(d), Spooled(int(i), True))
            keys.update(thread_keys_of(conn, SPOOL, wanted))
            inherit_thread_keys(rows, parents, keys)
            fresh = list({str(r["digest"]): r for r in rows if r["digest"] not in known}.values())
            new: dict[str, int] = {}
            if fresh:
                values = [{k: r[k] for k in SPOOL_COLUMNS} for r in fresh]
                ids = conn.execute(_PUT, values).scalars().all()
                new = {str(r["digest"]): int(i) for r, i in zip(fresh, ids, strict=True)}
        out: list[Stored | Spooled] = []
        seen: set[str] = set()
        for r in rows:
            d = str(r["digest"])
            out.append(known[d] if d in known else Spooled(new[d], d in seen))
            seen.add(d)
        return out

    def count(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(SPOOL)) or 0)

    def take(
        self, limit: int, max_bytes: int, shard: tuple[int, int] = (0, 1)
    ) -> tuple[list[dict[str, Any]], bool]:
        """The oldest spooled rows (at least one, however big), without removing them, and
        whether more may be waiting behind them. With ``shard = (index, count)`` only those
        whose thread key is ``index`` modulo ``count``, so a thread's mail goes to one worker."""
        with self.db.session() as s:
            stmt = select(SPOOL.c.id, SPOOL.c.size)
            if shard[1] > 1:
                stmt = stmt.where(SPOOL.c.thread_key % shard[1] == shard[0])
            sizes = ((int(i), int(n)) for i, n in s.execute(stmt.order_by(SPOOL.c.id).limit(limit)))
            chosen, more = pick_batch(sizes, limit, max_bytes)
            if not chosen:
                return [], False
            result = s.execute(select(SPOOL).where(SPOOL.c.id.in_(chosen)).order_by(SPOOL.c.id))
            return [dict(row._mapping) for row in result], more

    def rows(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """The spooled rows with these ids (those still there)."""
        with self.db.session() as s:
            result = s.execute(select(SPOOL).where(SPOOL.c.id.in_(list(ids))).order_by(SPOOL.c.id))
            return [dict(row._mapping) for row in result]

    def remove(self, ids: Sequence[int]) -> None:
        with self.db.write() as s:
            s.connection().execute(delete(SPOOL).where(SPOOL.c.id.in_(list(ids))))

    def dispose(self) -> None:
        self.db.dispose()


def import_spool(main: Database, spool: Spool, *, limit: int, max_bytes: int) -> int:
    """Move up to ``limit`` spooled messages into ``inbound`` (state pending); returns how many
    spool rows were consumed (imported or found to be duplicates)."""
    rows, _more = spool.take(limit, max_bytes)
    if not rows:
        return 0
    digests = list({str(r["digest"]) for r in rows})
    with main.write() as s:
        conn = s.connection()
        known = set(
            conn.execute(select(INBOUND.c.digest).where(INBOUND.c.digest.in_(digests))).scalars()
        )
        fresh: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["digest"] not in known and r["digest"] not in fresh:
                fresh[r["digest"]] = {
                    **{k: r[k] for k in SPOOL_COLUMNS},
                    "state": "pending",
                    "attempts": 0,
                    "processed_at": None,
                    "error": None,
                }
        if fresh:
            conn.execute(insert(INBOUND), list(fresh.values()))
    spool.remove([int(r["id"]) for r in rows])
    if len(fresh) < len(rows):
        log.info("spool: %d duplicate(s) dropped on import", len(rows) - len(fresh))
    return len(rows)
