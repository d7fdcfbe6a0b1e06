"""The inbound queue's contract: what every source puts in and the pipeline takes out.

One queue per store, behind one protocol (:class:`InboundQueue`), with the same guarantees
(tests/test_inbound_queue.py runs one suite over each):

- ``put`` returns only once the raw bytes are committed (fsync); a message already held (same
  :func:`digest`) is answered as a duplicate and stored once.
- ``take`` gives a worker's share (by thread key) in the order of arrival, without removing it.
- ``claim``, in the transaction that processes the message, makes it ``done`` or
  ``quarantined`` in ``inbound`` exactly once: a second claim (another worker, a rerun after a
  crash) gets None. ``done`` then forgets the entries that transaction claimed.
- ``quarantine`` and ``attempt`` are the supervisor's: a message a worker kept dying on or
  ran over its budget with. ``retry`` puts a quarantined message back; ``adopt`` (at start)
  takes over what an older version left waiting.

On SQLite the queue is the spool file beside the database (maild/ingest/spool.py), so that the
accept side never waits for the pipeline's write lock; on PostgreSQL it is the ``inbound``
table itself (maild/ingest/inbound.py). Either way a processed or quarantined message ends up
as a row of ``inbound``, where ``maild quarantine`` finds it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Select, Table, bindparam, select

from maild.core.clock import Clock
from maild.store.models import Inbound
from maild.threading.rawids import message_id, thread_key

INBOUND: Table = Inbound.__table__  # type: ignore[assignment]
MAX_BATCH_BYTES = 32 * 1024 * 1024
_TRACE = (b"received:", b"return-path:", b"delivered-to:", b"x-original-to:")
# The columns a queued message gives its ``inbound`` row (besides its state).
COLUMNS = (
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


@dataclass(frozen=True)
class Incoming:
    """A message handed in by a source (SMTP, LMTP, ``deliver``, IMAP)."""

    raw: bytes
    source: str
    envelope_from: str | None = None
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class Queued:
    """A message committed to the queue: its id there, and whether it was there already."""

    ident: int
    duplicate: bool
    prefix: str = ""  # "S" for the spool, so "queued as S12" never reads as an inbound id

    @property
    def queue_id(self) -> str:
        return f"{self.prefix}{self.ident}"


@dataclass(frozen=True)
class Entry:
    """A message taken from the queue: its id there and its row (``raw``, ``source``,
    ``envelope_from``, ``received_at``, and what the queue needs to claim it)."""

    ident: int
    row: Mapping[Any, Any]


class InboundQueue(Protocol):
    """The one queue of a store; see the module's docstring for the guarantees."""

    prefix: str

    def put(self, items: Sequence[Incoming], clock: Clock) -> list[Queued]: ...

    def take(
        self,
        limit: int,
        max_bytes: int = MAX_BATCH_BYTES,
        shard: tuple[int, int] = (0, 1),
        ids: Sequence[int] | None = None,
    ) -> tuple[list[Entry], bool]: ...

    def claim(
        self, conn: Connection, entry: Entry, state: str, error: str | None, now: datetime
    ) -> int | None: ...

    def done(self, entries: Sequence[Entry]) -> None: ...

    def quarantine(self, ident: int, reason: str, now: datetime) -> bool: ...

    def attempt(self, ident: int) -> int: ...

    def retry(self, inbound_id: int) -> int | None: ...

    def adopt(self) -> int: ...

    def count(self) -> int: ...

    def dispose(self) -> None: ...


def _after_trace(raw: bytes) -> int:
    """Where the message starts below the trace headers (Received, Return-Path...) on top."""
    pos, skipping = 0, False
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        if end < 0:
            break
        line = raw[pos : end + 1]
        if skipping and line[:1] in (b" ", b"\t"):
            pos = end + 1
            continue
        skipping = line[:16].lower().startswith(_TRACE)
        if not skipping:
            break
        pos = end + 1
    return pos


def digest(raw: bytes) -> str:
    """SHA-256 of the message without its leading trace headers, in one line-ending form.

    The same message retried by an MTA, or seen again over IMAP after a crash, has the same
    digest even when a relay put another Received line on top. CRLF counts as LF, and the
    message ends in exactly one line end: a pipe hands over bare LF, SMTP ends with CRLF, and a
    client that sends bare LF gets a CRLF added at the end (smtplib), so one mail sent both
    ways is one request. A message that already ended in one line end keeps the digest the
    first versions gave it (migration ``h10edge`` updates the others).
    """
    text = raw[_after_trace(raw) :].replace(b"\r\n", b"\n")
    end = len(text)
    while end and text[end - 1] == 0x0A:  # no copy of the message just to drop its last LF
        end -= 1
    h = hashlib.sha256(memoryview(text)[:end])
    h.update(b"\n")
    return h.hexdigest()


def queue_row(item: Incoming, now: datetime) -> dict[str, object]:
    """The columns of a queued message (see COLUMNS), computed before any write lock."""
    return {
        "received_at": now,
        "source": item.source,
        "envelope_from": item.envelope_from,
        "recipients": ",".join(item.recipients),
        "digest": digest(item.raw),
        "message_id": message_id(item.raw),
        "thread_key": thread_key(item.raw),
        "size": len(item.raw),
        "raw": item.raw,
    }


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


def thread_keys_of(conn: Connection, table: Table, ids: Iterable[str]) -> dict[str, int]:
    """Message-ID -> thread key of the rows of ``table`` (inbound or spool) with those ids.

    Anyone can reuse a Message-ID: the first row that had it keeps it, so a stranger's copy
    cannot move the owner's replies to another worker, ahead of the mail they answer.
    """
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(_thread_keys(table), {"ids": wanted})
    return {str(mid): int(key) for mid, key in rows}  # the earliest row is written last


@functools.lru_cache(maxsize=8)
def _thread_keys(table: Table) -> Select[tuple[Any, Any]]:
    """thread_keys_of's statement for ``table``, built once: it runs for every accepted
    message (building it and its cache key cost more than the query)."""
    c = table.c
    return (
        select(c.message_id, c.thread_key)
        .where(c.message_id.in_(bindparam("ids", expanding=True)), c.thread_key.is_not(None))
        .order_by(c.id.desc())
    )


def answers(
    rows: Sequence[Mapping[str, object]],
    known: Mapping[str, Queued],
    new: Mapping[str, int],
    prefix: str = "",
) -> list[Queued]:
    """What each row became: ``known`` holds the digests that were there already, ``new``
    those just written (their ids); a second copy within the batch is a duplicate too."""
    out: list[Queued] = []
    seen: set[str] = set()
    for r in rows:
        d = str(r["digest"])
        out.append(known[d] if d in known else Queued(new[d], d in seen, prefix))
        seen.add(d)
    return out
