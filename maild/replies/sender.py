"""The outbox sender: claims due mail, delivers it, retries with exponential back-off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, bindparam, select, update

from maild.clock import Clock, system_clock
from maild.errors import TemporaryFailure
from maild.replies.transport import SendError, Transport
from maild.store.db import Database
from maild.store.models import Outbox

log = logging.getLogger(__name__)

CLAIM_FOR = timedelta(minutes=10)


def backoff(attempts: int) -> timedelta:
    """15 s, 30 s, 1 min, ... capped at one hour."""
    return timedelta(seconds=min(15 * 2 ** max(attempts - 1, 0), 3600))


@dataclass(frozen=True)
class Claimed:
    id: int
    envelope_from: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int


_OUTBOX: Table = Outbox.__table__  # type: ignore[assignment]


def claim_due(db: Database, now: datetime, limit: int) -> list[Claimed]:
    """Mark up to ``limit`` due mails as ours for a while (SKIP LOCKED on PostgreSQL).

    Core statements, and the raw mail read after the write transaction: on SQLite the write
    lock is shared with the pipeline, so it is held for as little as possible.
    """
    o = _OUTBOX.c
    stmt = (
        select(o.id, o.envelope_from, o.recipients, o.attempts)
        .where(o.state == "queued", o.next_attempt_at <= now)
        .where((o.claimed_until.is_(None)) | (o.claimed_until < now))
        .order_by(o.id)
        .limit(limit)
    )
    if not db.is_sqlite:
        stmt = stmt.with_for_update(skip_locked=True)
    with db.write() as s:
        conn = s.connection()
        rows = conn.execute(stmt).all()
        ids = [int(r.id) for r in rows]
        if ids:
            conn.execute(update(_OUTBOX).where(o.id.in_(ids)).values(claimed_until=now + CLAIM_FOR))
    if not ids:
        return []
    with db.session() as s:
        raws = {
            int(i): bytes(raw) for i, raw in s.execute(select(o.id, o.raw).where(o.id.in_(ids)))
        }
    return [
        Claimed(
            int(r.id),
            r.envelope_from,
            tuple(filter(None, r.recipients.split(","))),
            raws[int(r.id)],
            int(r.attempts),
        )
        for r in rows
    ]


def _outcome(
    item: Claimed, now: datetime, error: SendError | None, warning: str | None, max_attempts: int
) -> dict[str, object]:
    values: dict[str, object] = {"claimed_until": None, "attempts": item.attempts + 1}
    if error is None:
        values.update(state="sent", sent_at=now, last_error=warning)
    elif error.permanent or item.attempts + 1 >= max_attempts:
        values.update(state="failed", last_error=str(error)[:2000])
    else:
        values.update(
            state="queued",
            last_error=str(error)[:2000],
            next_attempt_at=now + backoff(item.attempts + 1),
        )
        if error.retry:  # delivered to the others: only the deferred ones are tried again
            values["recipients"] = ",".join(error.retry)
    return values


Attempt = tuple[Claimed, SendError | None, str | None]


def record(db: Database, attempts: list[Attempt], now: datetime, max_attempts: int) -> list[str]:
    """Store the outcome of delivery attempts in one transaction; returns the new states."""
    states = []
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for item, error, warning in attempts:
        values = _outcome(item, now, error, warning, max_attempts)
        states.append(str(values["state"]))
        params = {"oid": item.id, **{f"v_{k}": v for k, v in values.items()}}
        groups.setdefault(tuple(sorted(values)), []).append(params)
    with db.write() as s:
        conn = s.connection()
        for keys, rows in groups.items():
            stmt = (
                update(_OUTBOX)
                .where(_OUTBOX.c.id == bindparam("oid"))
                .values({k: bindparam(f"v_{k}") for k in keys})
            )
            conn.execute(stmt, rows)
    return states


class OutboxSender:
    def __init__(
        self,
        db: Database,
        transport: Transport,
        *,
        max_attempts: int = 30,
        batch: int = 50,
        concurrency: int = 8,
        clock: Clock = system_clock,
    ) -> None:
        self.db = db
        self.concurrency = concurrency
        self.transport = transport
        self.max_attempts = max_attempts
        self.batch = batch
        self.clock = clock
        self.wake = asyncio.Event()

    async def send_due(self, now: datetime | None = None) -> int:
        """Deliver every mail due at ``now``; returns how many were attempted."""
        at = now or self.clock()
        items = await asyncio.to_thread(claim_due, self.db, at, self.batch)
        if not items:
            return 0
        many = getattr(self.transport, "send_many", None)
        attempts: list[Attempt]
        if many is not None:  # a local Maildir: one thread hop for the batch
            errors = await many([(i.envelope_from, i.recipients, i.raw) for i in items])
            attempts = [(i, err, None) for i, err in zip(items, errors, strict=True)]
        else:
            gate = asyncio.Semaphore(self.concurrency)
            attempts = list(await asyncio.gather(*(self._attempt(i, gate) for i in items)))
        later = max(at, self.clock())
        states = await asyncio.to_thread(record, self.db, attempts, later, self.max_attempts)
        for (item, error, _), state in zip(attempts, states, strict=True):
            if error is not None:
                log.warning(
                    "outbox: mail %d %s: %s",
                    item.id,
                    "failed" if state == "failed" else "deferred",
                    error,
                )
        return len(items)

    async def _attempt(self, item: Claimed, gate: asyncio.Semaphore) -> Attempt:
        async with gate:
            try:
                warning = await self.transport.send(item.envelope_from, item.recipients, item.raw)
            except SendError as exc:
                return item, exc, None
            except Exception as exc:  # never lose the other outcomes of the batch
                log.exception("outbox: mail %d: unexpected error", item.id)
                return item, SendError(f"{type(exc).__name__}: {exc}", permanent=False), None
            return item, None, warning

    async def run(self, stopping: asyncio.Event) -> None:
        """Send until ``stopping`` is set; woken early by ``wake``, else every 5 s."""
        while not stopping.is_set():
            try:
                sent = await self.send_due()
            except TemporaryFailure as exc:
                log.error("outbox: %s", exc)
                sent = 0
            except Exception:  # one broad except: the sender never dies
                log.exception("outbox: unexpected error")
                sent = 0
            if sent >= self.batch:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=5.0)
