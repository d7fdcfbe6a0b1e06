"""Runs the stages over stored messages: one transaction a batch, a savepoint a message."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from maild.clock import Clock, system_clock
from maild.config import Config
from maild.errors import QuarantineError, TemporaryFailure
from maild.ingest.parse import Limits, ParsedMail, parse_mail
from maild.ingest.spool import SPOOL_COLUMNS, Spool, pick_batch
from maild.pipeline.apply import Apply
from maild.pipeline.base import Context, Stage, Work
from maild.pipeline.bounced import Bounce
from maild.pipeline.classify import Classify
from maild.pipeline.identify import Identify, staff_dkim
from maild.pipeline.incident import Incident
from maild.pipeline.match import MatchTicket
from maild.pipeline.notify import Notify
from maild.replies.render import Renderer
from maild.security.proof import DnsFunc
from maild.store.db import Database
from maild.store.models import Inbound

log = logging.getLogger(__name__)

# The order of the pipeline, reviewed in one place. "parse" runs before the transaction.
PIPELINE: tuple[str, ...] = (
    "parse",
    "classify",
    "identify",
    "match-ticket",
    "bounce",
    "apply",
    "incident",
    "notify",
)
STAGES: dict[str, Callable[[], Stage]] = {
    "classify": Classify,
    "identify": Identify,
    "match-ticket": MatchTicket,
    "bounce": Bounce,
    "apply": Apply,
    "incident": Incident,
    "notify": Notify,
}
MAX_BATCH_BYTES = 32 * 1024 * 1024
CONFLICT_RETRIES = 5  # a slice PostgreSQL rolled back as a deadlock victim is redone
NOTHING, SPOOLED, INBOUND = 0, 1, 2  # what a worker has in hand (Pipeline.in_hand)
SLICE_SECONDS = 0.02
_INBOUND: Table = Inbound.__table__  # type: ignore[assignment]
# Spooled mail is claimed by its insert; a digest seen before means "already ours".
_CLAIM_SPOOLED = (
    sqlite_insert(_INBOUND)
    .on_conflict_do_nothing(index_elements=[_INBOUND.c.digest])
    .returning(_INBOUND.c.id)
)
_CLAIM = (
    update(_INBOUND)
    .where(_INBOUND.c.id == bindparam("iid"), _INBOUND.c.state == "pending")
    .values(
        state=bindparam("state"),
        error=bindparam("error"),
        processed_at=bindparam("at"),
        attempts=_INBOUND.c.attempts + 1,
    )
)


@dataclass(frozen=True)
class Pending:
    id: int | None  # None while the message is still in the spool: claiming it gives it one
    source: str
    envelope_from: str | None
    parsed: ParsedMail | None
    error: str | None
    received_at: datetime
    spooled: dict[str, Any] | None = None  # the spool row, inserted into inbound to claim it
    dkim: frozenset[str] = frozenset()  # DKIM domains verified (only for a staff From)


class Pipeline:
    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        clock: Clock = system_clock,
        spool: Spool | None = None,
        shard: tuple[int, int] = (0, 1),
        dnsfunc: DnsFunc | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.spool = spool
        # Worker ``index`` of ``count`` takes the mail (spooled or pending in ``inbound``) whose
        # thread key is ``index`` modulo ``count``: a thread stays with one worker, in order,
        # and parallel workers never parse the same mail.
        self.shard = shard
        self.dnsfunc = dnsfunc  # DKIM key lookups (dkimpy's interface); None: real DNS
        # Told which message is in hand (SPOOLED or INBOUND, its id; NOTHING between batches),
        # so that the daemon can tell which one a worker was on when it died.
        self.in_hand: Callable[[int, int], None] = lambda _kind, _ident: None
        # After a worker died with a message in hand, its successor takes this many messages
        # one at a time, so that a death is blamed on the one message it happened on.
        self.careful = 0
        # True once this pipeline is to stop after the slice in hand (a thread that overran
        # its budget and was replaced): the rest of its batch stays for its successor.
        self.halted: Callable[[], bool] = lambda: False
        self.renderer = Renderer(config.desk.templates)
        self.stages = [STAGES[name]() for name in PIPELINE if name != "parse"]
        lim = config.limits
        self.limits = Limits(lim.max_parts, lim.max_depth, lim.max_header_bytes)

    def parse(self, row: Mapping[Any, Any], *, spooled: bool = False) -> Pending:
        """Parse a row (``raw``, ``source``, ``envelope_from``, ``received_at``; ``id`` for
        an inbound row). A parse failure is kept, to be quarantined in the transaction."""
        self.in_hand(SPOOLED if spooled else INBOUND, int(row["id"]))
        try:
            parsed, error = parse_mail(row["raw"], self.limits), None
        except QuarantineError as exc:
            parsed, error = None, str(exc)
        except Exception as exc:  # a parser bug must not stop the queue
            parsed, error = None, f"parse failed: {type(exc).__name__}: {exc}"
        return Pending(
            None if spooled else int(row["id"]),
            row["source"],
            row["envelope_from"],
            parsed,
            error,
            row["received_at"],
            dict(row) if spooled else None,
            staff_dkim(self.config, parsed, row["raw"], self.dnsfunc),
        )

    def _load(self, ids: Sequence[int] | None, limit: int) -> tuple[list[Pending], bool]:
        """The oldest pending inbound rows of this worker's share (or just ``ids``), parsed,
        and whether more may be waiting behind them."""
        c = _INBOUND.c
        with self.db.session() as s:
            stmt = select(c.id, c.size).where(c.state == "pending")
            if ids is not None:
                stmt = stmt.where(c.id.in_(ids))
            elif self.shard[1] > 1:
                key = func.coalesce(c.thread_key, c.id)
                stmt = stmt.where(key % self.shard[1] == self.shard[0])
            # By arrival, not id: a stop moves spooled mail in with new ids but its own times.
            stmt = stmt.order_by(c.received_at, c.id).limit(limit)
            sizes = ((int(i), int(n)) for i, n in s.execute(stmt))
            chosen, more = pick_batch(sizes, limit, MAX_BATCH_BYTES)
            rows = s.execute(
                select(c.id, c.raw, c.source, c.envelope_from, c.received_at)
                .where(c.id.in_(chosen))
                .order_by(c.received_at, c.id)
            )
            return [self.parse(r._mapping) for r in rows], more and ids is None

    def _take_spooled(self, limit: int) -> tuple[list[Pending], bool]:
        assert self.spool is not None
        rows, more = self.spool.take(limit, MAX_BATCH_BYTES, self.shard)
        return [self.parse(r, spooled=True) for r in rows], more

    def process(self, ids: Sequence[int] | None = None, limit: int | None = None) -> int:
        """Process one batch of pending messages (or just ``ids``); returns how many.

        With a spool (SQLite), a batch is the oldest spooled mail and the oldest pending
        ``inbound`` rows (from ``deliver``, IMAP, a quarantine retry or a stop), merged in the
        order of arrival and cut where either source may have older mail still waiting, so a
        reply never overtakes the mail it answers. Spooled mail is claimed by inserting it
        into ``inbound`` in the same transaction as its processing; its spool rows are deleted
        after that commits (see maild/ingest/spool.py).
        """
        limit = 1 if self.careful else (limit or self.config.pipeline.batch_size)
        try:
            spooled: list[Pending] = []
            more_spooled = False
            if self.spool is not None and ids is None:
                spooled, more_spooled = self._take_spooled(limit)
            loaded, more_loaded = self._load(ids, limit)
            batch = in_order(spooled, more_spooled, loaded, more_loaded)
            if self.careful:
                batch = batch[:1]
            left = list(batch)
            while left and not self.halted():
                left = self._slice_retrying(left)
            self.in_hand(NOTHING, 0)
            if self.careful and batch:
                self.careful -= 1
            handled = batch[: len(batch) - len(left)]
            done = [int(p.spooled["id"]) for p in handled if p.spooled is not None]
            if done:
                assert self.spool is not None
                self.spool.remove(done)
        except (OperationalError, InterfaceError) as exc:
            raise TemporaryFailure(f"database unavailable: {exc.orig or exc}") from exc
        return len(batch)

    def _slice_retrying(self, items: list[Pending]) -> list[Pending]:
        """A slice, redone at once when PostgreSQL chose it as a deadlock's victim (two workers
        locking the same request and the request counter in opposite orders): that rolled it
        back whole, and nothing is wrong with the mail or the database."""
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                return self._slice(items)
            except OperationalError as exc:
                state = getattr(exc.orig, "sqlstate", None)
                if state not in ("40P01", "40001") or attempt == CONFLICT_RETRIES:
                    raise
                log.info("pipeline: transaction conflict (%s); redoing the slice", state)
                time.sleep(random.uniform(0.0, 0.05 * attempt))
        return items  # not reached

    def _slice(self, items: list[Pending]) -> list[Pending]:
        """Apply messages in one short write transaction; returns those left for the next.

        Optimistic: no savepoint per message. If one message fails, the slice is rolled back
        and redone one message at a time, so the bad one goes to quarantine alone. A slice
        ends after SLICE_SECONDS so that the SMTP side never waits long for the write lock.
        """
        started = time.monotonic()
        try:
            with self.db.write() as s:
                for n, item in enumerate(items):
                    self._one(s, item, isolated=False)
                    if time.monotonic() - started > SLICE_SECONDS:
                        return items[n + 1 :]
                return []
        except (OperationalError, InterfaceError):
            raise
        except Exception:  # a bad message: find it, and only it
            log.info("pipeline: a message failed; redoing %d one by one", len(items))
        for item in items:
            with self.db.write() as s:
                self._one(s, item, isolated=True)
        return []

    def _claim(self, s: Session, item: Pending, state: str, error: str | None) -> int | None:
        """Make the message ours (state ``done`` or ``quarantined``); None if it already was.

        An inbound row moves from ``pending``; a spooled message is inserted, and its digest
        (unique) tells that an earlier run got it already (a crash before the spool delete).
        """
        now = self.clock()
        conn = s.connection()
        if item.spooled is None:
            params = {"iid": item.id, "state": state, "error": error, "at": now}
            return item.id if conn.execute(_CLAIM, params).rowcount else None
        row = {k: item.spooled[k] for k in SPOOL_COLUMNS}
        row.update(state=state, error=error, processed_at=now, attempts=1)
        return conn.execute(_CLAIM_SPOOLED, row).scalar()

    def _one(self, s: Session, item: Pending, *, isolated: bool) -> None:
        if item.spooled is not None:
            self.in_hand(SPOOLED, int(item.spooled["id"]))
        else:
            self.in_hand(INBOUND, int(item.id or 0))
        if item.parsed is None:
            iid = self._claim(s, item, "quarantined", item.error)
            if iid is not None:
                log.warning("inbound %d quarantined: %s", iid, item.error)
            return
        iid = self._claim(s, item, "done", None)
        if iid is None:
            return  # another worker got it first
        if not isolated:
            self._stages(s, iid, item)
            return
        try:
            with s.begin_nested():
                self._stages(s, iid, item)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # the one broad except: a bad message goes to quarantine
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            s.execute(
                update(_INBOUND)
                .where(_INBOUND.c.id == iid)
                .values(state="quarantined", error=f"stage failed: {reason}")
            )
            log.warning("inbound %d quarantined: stage failed: %s", iid, reason)

    def _stages(self, s: Session, iid: int, item: Pending) -> None:
        ctx = Context(session=s, config=self.config, clock=self.clock, renderer=self.renderer)
        work = Work(iid, item.source, item.envelope_from, parsed=item.parsed, dkim=item.dkim)
        for stage in self.stages:
            try:
                work = stage(work, ctx)
            except Exception as exc:
                exc.add_note(f"in stage {stage.name}")
                raise


def quarantine_in_hand(
    db: Database, spool: Spool | None, kind: int, ident: int, reason: str, now: datetime
) -> bool:
    """Quarantine the message a worker kept dying on (spooled or pending in ``inbound``), raw
    bytes kept, so that its share of the queue moves again; False if it is no longer waiting."""
    if kind == SPOOLED and spool is not None:
        rows = spool.rows([ident])
        if not rows:
            return False
        row = {k: rows[0][k] for k in SPOOL_COLUMNS}
        row.update(state="quarantined", error=reason, processed_at=now, attempts=1)
        with db.write() as s:
            inserted = s.connection().execute(_CLAIM_SPOOLED, row).scalar() is not None
        spool.remove([ident])
        return inserted  # False: processed after all (a crash before the spool delete)
    if kind == INBOUND:
        with db.write() as s:
            result = s.connection().execute(
                update(_INBOUND)
                .where(_INBOUND.c.id == ident, _INBOUND.c.state == "pending")
                .values(state="quarantined", error=reason, processed_at=now)
            )
            return bool(result.rowcount)
    return False


def in_order(
    first: list[Pending], more_first: bool, second: list[Pending], more_second: bool
) -> list[Pending]:
    """Two sources' oldest mail merged by arrival, up to where either may hold older mail.

    A source that gave all it had sets no limit; one that may have more behind its last
    message cuts the batch there, as a message arriving later could answer a message still
    waiting in it.
    """
    merged = sorted(first + second, key=lambda p: p.received_at)
    cuts = [
        max(p.received_at for p in src)
        for src, more in ((first, more_first), (second, more_second))
        if more and src
    ]
    if not cuts:
        return merged
    cut = min(cuts)
    return [p for p in merged if p.received_at <= cut]


def drain(
    pipeline: Pipeline,
    stopping: Callable[[], bool] = lambda: False,
    after_batch: Callable[[int], None] = lambda _n: None,
) -> int:
    """Process batches until nothing is pending (or asked to stop); returns how many.

    ``after_batch`` hears of every batch that did something, so the outbox sender can start
    on its mail while a long backlog is still being worked through.
    """
    total = 0
    while not stopping():
        n = pipeline.process()
        total += n
        if n == 0:
            break
        after_batch(n)
    return total
