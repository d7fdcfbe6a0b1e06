"""Runs the stages over stored messages: one transaction a batch, a savepoint a message."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from maild.clock import Clock, system_clock
from maild.config import Config
from maild.errors import QuarantineError, TemporaryFailure
from maild.ingest.parse import Limits, ParsedMail, parse_mail
from maild.pipeline.apply import Apply
from maild.pipeline.base import Context, Stage, Work
from maild.pipeline.classify import Classify
from maild.pipeline.identify import Identify
from maild.pipeline.match import MatchTicket
from maild.pipeline.notify import Notify
from maild.replies.render import Renderer
from maild.store.db import Database
from maild.store.models import Inbound

log = logging.getLogger(__name__)

# The order of the pipeline, reviewed in one place. "parse" runs before the transaction.
PIPELINE: tuple[str, ...] = ("parse", "classify", "identify", "match-ticket", "apply", "notify")
STAGES: dict[str, Callable[[], Stage]] = {
    "classify": Classify,
    "identify": Identify,
    "match-ticket": MatchTicket,
    "apply": Apply,
    "notify": Notify,
}
MAX_BATCH_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Pending:
    id: int
    source: str
    envelope_from: str | None
    parsed: ParsedMail | None
    error: str | None


class Pipeline:
    def __init__(self, config: Config, db: Database, *, clock: Clock = system_clock) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.renderer = Renderer(config.desk.templates)
        self.stages = [STAGES[name]() for name in PIPELINE if name != "parse"]
        lim = config.limits
        self.limits = Limits(lim.max_parts, lim.max_depth, lim.max_header_bytes)

    def parse(self, row: Inbound) -> Pending:
        try:
            parsed, error = parse_mail(row.raw, self.limits), None
        except QuarantineError as exc:
            parsed, error = None, str(exc)
        except Exception as exc:  # a parser bug must not stop the queue
            parsed, error = None, f"parse failed: {type(exc).__name__}: {exc}"
        return Pending(row.id, row.source, row.envelope_from, parsed, error)

    def _load(self, ids: Sequence[int] | None, limit: int) -> list[Pending]:
        with self.db.session() as s:
            stmt = select(Inbound.id, Inbound.size).where(Inbound.state == "pending")
            if ids is not None:
                stmt = stmt.where(Inbound.id.in_(ids))
            chosen: list[int] = []
            total = 0
            for iid, size in s.execute(stmt.order_by(Inbound.id).limit(limit)):
                if chosen and total + size > MAX_BATCH_BYTES:
                    break
                chosen.append(iid)
                total += size
            rows = s.scalars(select(Inbound).where(Inbound.id.in_(chosen)).order_by(Inbound.id))
            return [self.parse(r) for r in rows]

    def process(self, ids: Sequence[int] | None = None, limit: int | None = None) -> int:
        """Process one batch of pending messages (or just ``ids``); returns how many."""
        try:
            batch = self._load(ids, limit or self.config.pipeline.batch_size)
            if batch:
                with self.db.write() as s:
                    for item in batch:
                        self._one(s, item)
        except (OperationalError, InterfaceError, DBAPIError) as exc:
            raise TemporaryFailure(f"database unavailable: {exc.orig or exc}") from exc
        return len(batch)

    def _claim(self, s: Session, item: Pending, state: str, error: str | None) -> bool:
        result = s.execute(
            update(Inbound)
            .where(Inbound.id == item.id, Inbound.state == "pending")
            .values(
                state=state, error=error, processed_at=self.clock(), attempts=Inbound.attempts + 1
            )
        )
        return bool(getattr(result, "rowcount", 0))

    def _one(self, s: Session, item: Pending) -> None:
        if item.parsed is None:
            if self._claim(s, item, "quarantined", item.error):
                log.warning("inbound %d quarantined: %s", item.id, item.error)
            return
        if not self._claim(s, item, "done", None):
            return  # another worker got it first
        ctx = Context(session=s, config=self.config, clock=self.clock, renderer=self.renderer)
        work = Work(item.id, item.source, item.envelope_from, parsed=item.parsed)
        stage_name = ""
        try:
            with s.begin_nested():
                for stage in self.stages:
                    stage_name = stage.name
                    work = stage(work, ctx)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # the one broad except: a bad message goes to quarantine
            reason = f"stage {stage_name} failed: {type(exc).__name__}: {exc}"[:2000]
            s.execute(
                update(Inbound)
                .where(Inbound.id == item.id)
                .values(state="quarantined", error=reason)
            )
            log.warning("inbound %d quarantined: %s", item.id, reason)


def drain(pipeline: Pipeline, stopping: Callable[[], bool] = lambda: False) -> int:
    """Process batches until nothing is pending (or asked to stop); returns how many."""
    total = 0
    while not stopping():
        n = pipeline.process()
        total += n
        if n == 0:
            break
    return total
