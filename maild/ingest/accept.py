"""The durable accept step: raw bytes committed (fsync) before any source says "accepted"."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from maild.clock import Clock, system_clock
from maild.errors import RejectedMessage, TemporaryFailure
from maild.store.db import Database
from maild.store.models import Inbound

if TYPE_CHECKING:
    from maild.ingest.spool import Spool, Spooled

log = logging.getLogger(__name__)

_TRACE = (b"received:", b"return-path:", b"delivered-to:", b"x-original-to:")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
_MSGID = re.compile(rb"(?im)^message-id[ \t]*:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)")
_REFERENCES = re.compile(rb"(?im)^references[ \t]*:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)")
_IN_REPLY_TO = re.compile(rb"(?im)^in-reply-to[ \t]*:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)")
_FIRST_ID = re.compile(rb"<[^<>\s]+>")
_MBOX_FROM = re.compile(rb"From [^\s:]")  # "From sender date", never "From : x"


@dataclass(frozen=True)
class Stored:
    inbound_id: int
    duplicate: bool

    @property
    def queue_id(self) -> str:
        return str(self.inbound_id)


@dataclass(frozen=True)
class Incoming:
    raw: bytes
    source: str
    envelope_from: str | None = None
    recipients: tuple[str, ...] = ()


def strip_mbox_line(raw: bytes) -> bytes:
    """Drop an mbox "From " line that pipe transports sometimes put first (Postfix pipe flag
    F, procmail, mbox imports); it is no header, and the mail below it is whole."""
    if _MBOX_FROM.match(raw):
        end = raw.find(b"\n")
        return raw[end + 1 :] if end >= 0 else b""
    return raw


def header_block(raw: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end >= 0:
            return raw[: end + len(sep)]
    return raw


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


def quick_message_id(raw: bytes) -> str | None:
    m = _MSGID.search(header_block(raw))
    if not m:
        return None
    value = re.sub(rb"\s+", b"", m.group(1)).decode("ascii", "replace")
    return value[:998] or None


def thread_key(raw: bytes) -> int:
    """A number shared by a message and the replies to it, for sharing work among workers.

    The root of the thread: the first References entry (RFC 5322 puts the thread's first
    message there), else In-Reply-To, else the message's own Message-ID. A customer's quick
    follow-up to their own first mail then goes to the same worker as that mail, which
    processes both in order, so the follow-up finds the request it belongs to.
    """
    head = header_block(raw)
    for pattern in (_REFERENCES, _IN_REPLY_TO, _MSGID):
        m = pattern.search(head)
        if m:
            first = _FIRST_ID.search(m.group(1))
            if first:
                return zlib.crc32(first.group(0)) & 0x7FFFFFFF
    return zlib.crc32(raw[:4096]) & 0x7FFFFFFF


def parent_ids(raw: bytes) -> tuple[str, ...]:
    """The Message-IDs a message answers, nearest first: In-Reply-To, then References from
    the end (at most 20)."""
    head = header_block(raw)
    ids: list[bytes] = []
    m = _IN_REPLY_TO.search(head)
    if m:
        ids.extend(_FIRST_ID.findall(m.group(1))[:3])
    m = _REFERENCES.search(head)
    if m:
        ids.extend(reversed(_FIRST_ID.findall(m.group(1))[-20:]))
    return tuple(dict.fromkeys(i.decode("ascii", "replace") for i in ids))[:20]


def inherit_thread_keys(
    rows: Sequence[dict[str, object]],
    parents: Sequence[tuple[str, ...]],
    known: dict[str, int],
) -> None:
    """A message answering one we hold (``known``: Message-ID -> thread key, or an earlier
    row of this batch) takes that message's thread key, so a whole thread keeps one key even
    when its first message itself answered something older."""
    batch: dict[str, int] = {}
    for row, ids in zip(rows, parents, strict=True):
        for pid in ids:
            key = batch.get(pid, known.get(pid))
            if key is not None:
                row["thread_key"] = key
                break
        if row["message_id"]:  # the first holder of a Message-ID keeps it
            batch.setdefault(str(row["message_id"]), int(str(row["thread_key"])))


def thread_keys_of(conn: Connection, table: Table, ids: Iterable[str]) -> dict[str, int]:
    """Message-ID -> thread key of the rows of ``table`` (inbound or spool) with those ids.

    Anyone can reuse a Message-ID: the first row that had it keeps it, so a stranger's copy
    cannot move the owner's replies to another worker, ahead of the mail they answer.
    """
    wanted = list(set(ids))
    if not wanted:
        return {}
    c = table.c
    rows = conn.execute(
        select(c.message_id, c.thread_key)
        .where(c.message_id.in_(wanted), c.thread_key.is_not(None))
        .order_by(c.id.desc())
    )
    return {str(mid): int(key) for mid, key in rows}  # the earliest row is written last


def check_acceptable(raw: bytes, max_size: int | None = None) -> None:
    """Raise RejectedMessage for input that can never be a mail."""
    if not raw.strip():
        raise RejectedMessage("empty message")
    if max_size is not None and len(raw) > max_size:
        raise RejectedMessage(f"message is {len(raw)} bytes, over the limit of {max_size}")
    # Real mail may open with a BOM or blank padding lines; the parser skips those too.
    first = raw.lstrip(b"\xef\xbb\xbf").lstrip(b" \t\r\n").split(b"\n", 1)[0]
    if not _HEADER_LINE.match(first):
        raise RejectedMessage("not a mail: the first line is not a header")


def inbound_row(item: Incoming, clock: Clock) -> dict[str, object]:
    return {
        "received_at": clock(),
        "source": item.source,
        "envelope_from": item.envelope_from,
        "recipients": ",".join(item.recipients),
        "digest": digest(item.raw),
        "message_id": quick_message_id(item.raw),
        "thread_key": thread_key(item.raw),
        "size": len(item.raw),
        "raw": item.raw,
        "state": "pending",
        "attempts": 0,
        "processed_at": None,
        "error": None,
    }


INBOUND: Table = Inbound.__table__  # type: ignore[assignment]
_INSERT = insert(INBOUND).returning(INBOUND.c.id, sort_by_parameter_order=True)


def _store_batch(db: Database, items: Sequence[Incoming], clock: Clock) -> list[Stored]:
    rows = [inbound_row(i, clock) for i in items]  # digests are computed before the write lock
    parents = [parent_ids(i.raw) for i in items]
    with db.write() as s:
        conn = s.connection()
        wanted = list({p for ids in parents for p in ids})
        known_keys = thread_keys_of(conn, INBOUND, wanted)
        if db.is_sqlite and wanted:  # an SMTP original may still wait in the spool
            from maild.ingest.spool import spooled_thread_keys

            known_keys = {**spooled_thread_keys(db.url, wanted), **known_keys}
        inherit_thread_keys(rows, parents, known_keys)
        digests = list({str(r["digest"]) for r in rows})
        found = conn.execute(
            select(INBOUND.c.digest, INBOUND.c.id).where(INBOUND.c.digest.in_(digests))
        )
        known: dict[str, int] = {str(d): int(i) for d, i in found}
        fresh = list({str(r["digest"]): r for r in rows if r["digest"] not in known}.values())
        if fresh:
            ids = conn.execute(_INSERT, fresh).scalars().all()
            new = {str(r["digest"]): int(i) for r, i in zip(fresh, ids, strict=True)}
        else:
            new = {}
        out, seen = [], set()
        for r in rows:
            d = str(r["digest"])
            if d in known:
                out.append(Stored(known[d], True))
            else:
                out.append(Stored(new[d], d in seen))
                seen.add(d)
        return out


def store_many(
    db: Database, items: Sequence[Incoming], clock: Clock = system_clock
) -> list[Stored]:
    """Commit every item in one transaction (group commit); dedupe by digest."""
    try:
        return _store_batch(db, items, clock)
    except IntegrityError:
        # Another process stored one of these between our check and our insert.
        if len(items) == 1:
            return _store_batch(db, items, clock)
        return [r for item in items for r in _store_batch(db, [item], clock)]
    except (OperationalError, DBAPIError) as exc:
        raise TemporaryFailure(f"database unavailable: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


def store_raw(
    db: Database,
    raw: bytes,
    *,
    source: str,
    envelope_from: str | None = None,
    recipients: Sequence[str] = (),
    max_size: int | None = None,
    clock: Clock = system_clock,
) -> Stored:
    """Durably store one raw message; returns only once it is committed."""
    raw = strip_mbox_line(raw)
    check_acceptable(raw, max_size)
    return store_many(db, [Incoming(raw, source, envelope_from, tuple(recipients))], clock)[0]


_Waiting = tuple[Incoming, "asyncio.Future[Stored | Spooled]"]


class Acceptor:
    """Group commit for the asyncio sources: every waiting message shares one fsync."""

    def __init__(
        self,
        db: Database,
        *,
        spool: Spool | None = None,
        on_stored: Callable[[], None] = lambda: None,
        max_batch: int = 128,
        clock: Clock = system_clock,
    ) -> None:
        self.db = db
        self.spool = spool
        self.on_stored = on_stored
        self.max_batch = max_batch
        self.clock = clock
        self._queue: asyncio.Queue[tuple[Incoming, asyncio.Future[Stored | Spooled]]] = (
            asyncio.Queue()
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="maild-accept")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._busy = False  # the writer is storing a batch: a stop lets it finish

    def _store(self, items: Sequence[Incoming]) -> Sequence[Stored | Spooled]:
        if self.spool is None:
            return store_many(self.db, items, self.clock)
        try:
            return self.spool.put(self.db, items, self.clock)
        except (OperationalError, DBAPIError) as exc:
            raise TemporaryFailure(f"spool unavailable: {_short(exc)}") from exc

    async def accept(self, item: Incoming) -> Stored | Spooled:
        if self._closing:
            raise TemporaryFailure("shutting down")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._writer(), name="maild-accept")
        fut: asyncio.Future[Stored | Spooled] = loop.create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._busy = True
            try:
                await self._write(batch)
            finally:
                self._busy = False
            if self._closing and self._queue.empty():
                return

    async def _write(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        items = [b[0] for b in batch]
        try:
            results = await loop.run_in_executor(self._executor, self._store, items)
        except Exception as exc:  # the one broad except: every waiter gets an answer
            err = exc if isinstance(exc, TemporaryFailure) else TemporaryFailure(str(exc))
            log.error("accept: could not store %d message(s): %s", len(batch), err)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)
        self.on_stored()

    async def close(self, timeout: float = 30.0) -> None:
        """Store what is already handed in (its senders get their answers), then stop."""
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            if self._queue.empty() and not self._busy:
                task.cancel()  # idle: waiting for the next message that will not come
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
