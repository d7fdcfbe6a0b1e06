"""Prometheus metrics: counters of this process plus figures read from the database.

The pipeline runs in worker processes, so what it did is read from the rows every worker
writes (inbound states, outbox states, requests, breaches, ratings, and the accept-to-processed
latency of each message), never from one process's memory. Only what happens in the daemon
process itself is counted in memory: SMTP/LMTP replies and HTTP responses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from maild.core.clock import as_utc
from maild.ingest.inbound import TableQueue
from maild.ingest.queue import InboundQueue
from maild.store.db import Database
from maild.store.models import Inbound, Outbox, Ticket
from maild.tickets.words import InboundState, OutboxState

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LATENCY_BATCH = 10_000  # rows read per scrape at most; a long backlog is caught up over scrapes
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LatencyFeed:
    """Feeds the latency histogram from ``inbound`` rows processed since the daemon started.

    ``mark`` is an inbound id below which every row has been observed (or predates the
    start); rows above it that were observed are remembered until the mark passes them.
    """

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.mark: int | None = None
        self.seen: set[int] = set()

    def prime(self, s: Session) -> None:
        """Start after what is already processed: the histogram counts from the start."""
        pending = s.scalar(
            select(func.min(Inbound.id)).where(Inbound.state == InboundState.PENDING)
        )
        last = s.scalar(select(func.max(Inbound.id)))
        self.mark = int(pending) - 1 if pending is not None else int(last or 0)

    def update(self, s: Session) -> None:
        if self.mark is None:
            self.prime(s)
            return
        c = Inbound
        rows = s.execute(
            select(c.id, c.state, c.received_at, c.processed_at)
            .where(c.id > self.mark)
            .order_by(c.id)
            .limit(LATENCY_BATCH)
        ).all()
        first_open: int | None = None
        for ident, state, received, processed in rows:
            if state == InboundState.PENDING or processed is None:
                first_open = ident if first_open is None else first_open
                continue
            if ident not in self.seen:
                self.seen.add(ident)
                self.histogram.observe(_seconds(received, processed))
        if rows:
            self.mark = first_open - 1 if first_open is not None else int(rows[-1][0])
            self.seen = {i for i in self.seen if i > self.mark}


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (as_utc(end) - as_utc(start)).total_seconds())


class DeskCollector(Collector):
    """Figures read from the database at each scrape (shared by every worker and instance)."""

    def __init__(self, db: Database, queue: InboundQueue) -> None:
        self.db = db
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        waiting = self.queue.count()
        with self.db.session() as s:
            yield from _inbound(s, waiting)
            yield from _outbox(s)
            yield from _tickets(s)


def _grouped(s: Session, *columns: object) -> list[tuple[object, ...]]:
    stmt = select(*columns, func.count()).group_by(*columns)  # type: ignore[call-overload]
    return [tuple(row) for row in s.execute(stmt)]


def _inbound(s: Session, waiting: int) -> Iterator[Metric]:
    states = GaugeMetricFamily(
        "maild_inbound_messages",
        "Accepted mail by source and state (done, duplicate, quarantined); waiting: the queue",
        labels=["source", "state"],
    )
    processed = quarantined = 0
    for source, state, count in _grouped(s, Inbound.source, Inbound.state):
        if state == InboundState.PENDING:  # counted as the queue's, below
            continue
        states.add_metric([str(source), str(state)], float(str(count)))
        n = int(str(count))
        processed += n if state in (InboundState.DONE, InboundState.DUPLICATE) else 0
        quarantined += n if state == InboundState.QUARANTINED else 0
    states.add_metric(["all", "waiting"], float(waiting))
    yield states
    yield CounterMetricFamily(
        "maild_mail_processed", "Messages the pipeline has processed", value=processed
    )
    yield GaugeMetricFamily(
        "maild_mail_quarantined", "Messages in quarantine now", value=quarantined
    )


def _outbox(s: Session) -> Iterator[Metric]:
    gauge = GaugeMetricFamily(
        "maild_outbox_messages", "Outgoing mail by state (queued, sent, failed)", labels=["state"]
    )
    found = {str(state): int(str(count)) for state, count in _grouped(s, Outbox.state)}
    for state in sorted({*(s.value for s in OutboxState), *found}):
        gauge.add_metric([state], float(found.get(state, 0)))
    yield gauge


def _tickets(s: Session) -> Iterator[Metric]:
    by_status = GaugeMetricFamily("maild_requests", "Requests by status", labels=["status"])
    for status, count in _grouped(s, Ticket.status):
        by_status.add_metric([str(status)], float(str(count)))
    yield by_status
    breaches = s.scalar(select(func.count()).where(Ticket.sla_breached_at.is_not(None)))
    yield CounterMetricFamily(
        "maild_sla_breaches", "Requests whose first-response target was missed", value=breaches
    )
    ratings = CounterMetricFamily(
        "maild_survey_ratings", "Survey answers by rating", labels=["rating"]
    )
    found = {str(r): int(str(n)) for r, n in _grouped(s, Ticket.rating) if r is not None}
    for rating in ("good", "bad"):
        ratings.add_metric([rating], float(found.get(rating, 0)))
    yield ratings


class Metrics:
    """One daemon's registry: in-process counters plus the database collector."""

    def __init__(self, db: Database, queue: InboundQueue | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.accepted = Counter(
            "maild_mail_accepted",
            "Mail accepted (2xx) by source",
            ["source"],
            registry=self.registry,
        )
        self.refused = Counter(
            "maild_mail_refused",
            "Mail refused by source and reply code",
            ["source", "code"],
            registry=self.registry,
        )
        self.http = Counter(
            "maild_http_requests", "HTTP responses by status", ["status"], registry=self.registry
        )
        latency = Histogram(
            "maild_pipeline_latency_seconds",
            "From accepted to processed, per message",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.feed = LatencyFeed(latency)
        self.db = db
        self.registry.register(DeskCollector(db, queue or TableQueue(db)))

    def mail_reply(self, source: str, reply: str) -> None:
        """Count an SMTP/LMTP reply to DATA (or a refused MAIL/RCPT) by its code."""
        code = reply[:3]
        if code.startswith("2"):
            self.accepted.labels(source).inc()
        else:
            self.refused.labels(source, code).inc()

    def prime(self) -> None:
        with self.db.session() as s:
            self.feed.prime(s)

    def render(self) -> bytes:
        """The text exposition (reads the database: call it in a thread)."""
        with self.db.session() as s:
            self.feed.update(s)  # before the histogram is read
        return generate_latest(self.registry)
