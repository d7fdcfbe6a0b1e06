"""Runs the stages over queued messages: short write transactions, a bad message alone.

The runner knows the inbound queue only by its contract (maild/ingest/queue.py): it takes a
batch of its share, claims each message in the transaction that processes it, and tells the
queue which ones are done once that commits.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import Clock, system_clock
from maild.core.errors import QuarantineError, TemporaryFailure
from maild.ingest.inbound import TableQueue
from maild.ingest.parse import Limits, ParsedMail, parse_mail
from maild.ingest.queue import INBOUND, MAX_BATCH_BYTES, Entry, InboundQueue
from maild.pipeline.apply import Apply
from maild.pipeline.base import Context, Stage, Work
from maild.pipeline.bounced import Bounce
from maild.pipeline.classify import Classify
from maild.pipeline.identify import Identify, staff_dkim
from maild.pipeline.incident import Incident
from maild.pipeline.match import MatchTicket
from maild.pipeline.notify import Notify
from maild.pipeline.records import prepare
from maild.replies.render import Renderer
from maild.security.proof import DnsFunc
from maild.store.db import Database

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
CONFLICT_RETRIES = 5  # a slice PostgreSQL rolled back as a deadlock victim is redone
NOTHING, HELD = 0, 1  # whether a worker has a message in hand (Pipeline.in_hand)
# A slice commits after this long: each commit is an fsync with the write lock held (SQLite),
# and the sender and the scheduler wait for that lock at most this long. SMTP and LMTP do not:
# they write to the spool, a file of its own.
SLICE_SECONDS = 0.1


@dataclass(frozen=True)
class Pending:
    """A message taken from the queue, parsed (or with the reason it could not be)."""

    entry: Entry
    parsed: ParsedMail | None
    error: str | None
    dkim: frozenset[str] = frozenset()  # DKIM domains verified (only for a staff From)


class Pipeline:
    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        clock: Clock = system_clock,
        queue: InboundQueue | None = None,
        shard: tuple[int, int] = (0, 1),
        dnsfunc: DnsFunc | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.queue = queue if queue is not None else TableQueue(db)
        # Worker ``index`` of ``count`` takes the queued mail whose thread key is ``index``
        # modulo ``count``: a thread stays with one worker, in order, and parallel workers
        # never parse the same mail.
        self.shard = shard
        self.dnsfunc = dnsfunc  # DKIM key lookups (dkimpy's interface); None: real DNS
        # Told which message is in hand (HELD and its queue id; NOTHING between batches),
        # so that the daemon can tell which one a worker was on when it died.
        self.in_hand: Callable[[int, int], None] = lambda _kind, _ident: None
        # After a worker died with a message in hand, its successor takes this many messages
        # one at a time, so that a death is blamed on the one message it happened on.
        self.careful = 0
        # True once this pipeline is to stop after the slice in hand (a thread that overran
        # its budget and was replaced): the rest of its batch stays for its successor.
        self.halted: Callable[[], bool] = lambda: False
        self.renderer = Renderer(config.desk.templates, reload=False)  # new ones on SIGHUP
        self.stages = [STAGES[name]() for name in PIPELINE if name != "parse"]
        lim = config.limits
        self.limits = Limits(lim.max_parts, lim.max_depth, lim.max_header_bytes)

    def parse(self, entry: Entry) -> Pending:
        """Parse a queued message and prepare what its text gives (records.prepare), outside
        the write transaction; a parse failure is kept, to be quarantined in it."""
        self.in_hand(HELD, entry.ident)
        raw = entry.row["raw"]
        try:
            parsed, error = parse_mail(raw, self.limits), None
        except QuarantineError as exc:
            parsed, error = None, str(exc)
        except Exception as exc:  # a parser bug must not stop the queue
            parsed, error = None, f"parse failed: {type(exc).__name__}: {exc}"
        if parsed is not None:
            try:
                envelope_from = entry.row["envelope_from"]
                prepare(parsed, envelope_from, self.config, sqlite=self.db.is_sqlite)
            except Exception:  # only a head start: the stage works it out again, and fails there
                log.debug("inbound %d: not prepared", entry.ident, exc_info=True)
        return Pending(entry, parsed, error, staff_dkim(self.config, parsed, raw, self.dnsfunc))

    def process(self, ids: Sequence[int] | None = None, limit: int | None = None) -> int:
        """Process one batch of this worker's share of the queue, oldest first (or just the
        queue's ``ids``); returns how many. The queue forgets the messages once the
        transaction that claimed them has committed."""
        limit = 1 if self.careful else (limit or self.config.pipeline.batch_size)
        try:
            entries, _more = self.queue.take(limit, MAX_BATCH_BYTES, self.shard, ids)
            batch = [self.parse(e) for e in entries]
            if batch:
                self._ahead()
            left = list(batch)
            while left and not self.halted():
                left = self._slice_retrying(left)
            self.in_hand(NOTHING, 0)
            if self.careful and batch:
                self.careful -= 1
            self.queue.done([p.entry for p in batch[: len(batch) - len(left)]])
        except (OperationalError, InterfaceError) as exc:
            raise TemporaryFailure(f"database unavailable: {exc.orig or exc}") from exc
        return len(batch)

    def _ahead(self) -> None:
        """What the stages can read before the write transaction (see ``Stage.ahead``)."""
        try:
            with self.db.read() as s:
                ctx = Context(
                    session=s, config=self.config, clock=self.clock, renderer=self.renderer
                )
                self._tell("ahead", ctx)
        except Exception:  # only a head start: the stages read it again in the transaction
            log.debug("pipeline: reading ahead failed", exc_info=True)

    def _rolled_back(self) -> None:
        """Tell the stages that what they kept of the transaction was rolled back (a request
        number given in it may go to another request now): see ``Stage.rolled_back``."""
        self._tell("rolled_back")

    def _tell(self, hook: str, *args: object) -> None:
        """Call ``hook`` (see ``Stage``) on every stage that has it."""
        for stage in self.stages:
            method = getattr(stage, hook, None)
            if method is not None:
                method(*args)

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
        ends after SLICE_SECONDS so that the other writers never wait long for the lock.
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
            self._rolled_back()
            raise
        except Exception:  # a bad message: find it, and only it
            self._rolled_back()
            log.info("pipeline: a message failed; redoing %d one by one", len(items))
        for item in items:
            with self.db.write() as s:
                self._one(s, item, isolated=True)
        return []

    def _one(self, s: Session, item: Pending, *, isolated: bool) -> None:
        self.in_hand(HELD, item.entry.ident)
        now = self.clock()
        if item.parsed is None:
            iid = self.queue.claim(s.connection(), item.entry, "quarantined", item.error, now)
            if iid is not None:
                log.warning("inbound %d quarantined: %s", iid, item.error)
            return
        iid = self.queue.claim(s.connection(), item.entry, "done", None, now)
        if iid is None:
            return  # another worker (or an earlier run) got it first
        if not isolated:
            self._stages(s, iid, item)
            return
        try:
            with s.begin_nested():
                self._stages(s, iid, item)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # the one broad except: a bad message goes to quarantine
            self._rolled_back()
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            s.execute(
                update(INBOUND)
                .where(INBOUND.c.id == iid)
                .values(state="quarantined", error=f"stage failed: {reason}")
            )
            log.warning("inbound %d quarantined: stage failed: %s", iid, reason)

    def _stages(self, s: Session, iid: int, item: Pending) -> None:
        ctx = Context(session=s, config=self.config, clock=self.clock, renderer=self.renderer)
        row = item.entry.row
        work = Work(iid, row["source"], row["envelope_from"], parsed=item.parsed, dkim=item.dkim)
        for stage in self.stages:
            try:
                work = stage(work, ctx)
            except Exception as exc:
                exc.add_note(f"in stage {stage.name}")
                raise


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
