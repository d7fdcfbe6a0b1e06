"""The durable accept step: raw bytes committed (fsync) before any source says "accepted".

Every source puts into the store's one inbound queue (maild/ingest/queue.py): SMTP and LMTP
through :class:`Acceptor` (concurrent sessions share one commit), ``deliver``, IMAP and
``maild quarantine retry`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError

from maild.core.clock import Clock, system_clock
from maild.core.errors import RejectedMessage, TemporaryFailure
from maild.ingest.inbound import TableQueue
from maild.ingest.queue import InboundQueue, Incoming, Queued
from maild.ingest.spool import SpoolQueue, spool_path
from maild.store.db import Database

log = logging.getLogger(__name__)

_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
_MBOX_FROM = re.compile(rb"From [^\s:]")  # "From sender date", never "From : x"


def open_queue(db: Database) -> InboundQueue:
    """The store's inbound queue: the spool beside a SQLite file, else the ``inbound`` table."""
    path = spool_path(db.url)
    return TableQueue(db) if path is None else SpoolQueue(path, db)


def strip_mbox_line(raw: bytes) -> bytes:
    """Drop an mbox "From " line that pipe transports sometimes put first (Postfix pipe flag
    F, procmail, mbox imports); it is no header, and the mail below it is whole."""
    if _MBOX_FROM.match(raw):
        end = raw.find(b"\n")
        return raw[end + 1 :] if end >= 0 else b""
    return raw


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


def put(
    queue: InboundQueue, items: Sequence[Incoming], clock: Clock = system_clock
) -> list[Queued]:
    """``queue.put``, with the store's trouble as a TemporaryFailure (answered 451/75)."""
    try:
        return queue.put(items, clock)
    except DBAPIError as exc:
        raise TemporaryFailure(f"database unavailable: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


def store_raw(
    target: Database | InboundQueue,
    raw: bytes,
    *,
    source: str,
    envelope_from: str | None = None,
    recipients: Sequence[str] = (),
    max_size: int | None = None,
    clock: Clock = system_clock,
) -> Queued:
    """Durably queue one raw message; returns only once it is committed. Given a database,
    it goes into its ``inbound`` table (tests, tools: process it with ``Pipeline(config,
    db)``)."""
    raw = strip_mbox_line(raw)
    check_acceptable(raw, max_size)
    queue = TableQueue(target) if isinstance(target, Database) else target
    return put(queue, [Incoming(raw, source, envelope_from, tuple(recipients))], clock)[0]


_Waiting = tuple[Incoming, "asyncio.Future[Queued]"]


class Acceptor:
    """Group commit for the asyncio sources: every waiting message shares one fsync."""

    def __init__(
        self,
        queue: InboundQueue,
        *,
        on_stored: Callable[[], None] = lambda: None,
        max_batch: int = 128,
        clock: Clock = system_clock,
    ) -> None:
        self.queue = queue
        self.on_stored = on_stored
        self.max_batch = max_batch
        self.clock = clock
        self._queue: asyncio.Queue[tuple[Incoming, asyncio.Future[Queued]]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="maild-accept")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._busy = False  # the writer is storing a batch: a stop lets it finish

    def _store(self, items: Sequence[Incoming]) -> Sequence[Queued]:
        return put(self.queue, items, self.clock)

    async def accept(self, item: Incoming) -> Queued:
        if self._closing:
            raise TemporaryFailure("shutting down")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._writer(), name="maild-accept")
        fut: asyncio.Future[Queued] = loop.create_future()
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
