"""What the morning digest and the `#list` answers show: queues as lines, the desk's summary."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import as_utc
from maild.ops.queue import OPEN_STATUSES, age_text
from maild.ops.stats import percentile
from maild.scheduler.elapsed import business_hours_between, sla_progress
from maild.store.models import Ticket

log = logging.getLogger(__name__)

OLDEST = 5  # oldest open requests in the lead's summary
LIST_LIMIT = 50  # lines in one answer to #list or #search


@dataclass(frozen=True)
class Line:
    """One request as a digest or a list answer shows it."""

    id: int
    status: str
    priority: str
    subject: str
    requester: str
    assignee: str
    due: str
    age: str
    at_risk: bool


def at_risk(t: Ticket, config: Config, now: datetime) -> bool:
    """Unanswered and past ``[sla] warn_at`` of its target, or a task past its due date."""
    if t.due_at is None or t.status not in OPEN_STATUSES:
        return False
    due = as_utc(t.due_at)
    if t.first_response_at is None:
        progress = sla_progress(as_utc(t.created_at), due, now, config.hours)
        return progress >= config.sla.warn_at
    return t.type == "task" and due <= now


def line(t: Ticket, config: Config, now: datetime) -> Line:
    due = "-"
    if t.due_at is not None:
        due = as_utc(t.due_at).astimezone(config.hours.zone).strftime("%Y-%m-%d %H:%M")
    return Line(
        t.id,
        t.status,
        t.priority,
        t.subject[:80],
        t.requester,
        t.assignee or "-",
        due,
        age_text(t.created_at, now),
        at_risk(t, config, now),
    )


def _soonest_first(rows: list[Ticket]) -> list[Ticket]:
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(rows, key=lambda t: (as_utc(t.due_at) if t.due_at else far, t.id))


def queue(s: Session, which: str, agent: str, config: Config, now: datetime) -> list[Line]:
    """``mine``, ``unassigned``, ``breaching`` or ``all`` open requests, soonest promise first."""
    stmt = select(Ticket).where(Ticket.status.in_(OPEN_STATUSES))
    if which == "mine":
        stmt = stmt.where(Ticket.assignee == agent.lower())
    elif which == "unassigned":
        stmt = stmt.where(Ticket.assignee.is_(None))
    elif which == "breaching":
        stmt = stmt.where(or_(Ticket.sla_breached_at.is_not(None), Ticket.due_at <= now))
    rows = list(s.scalars(stmt.order_by(Ticket.id)))
    lines = [line(t, config, now) for t in _soonest_first(rows)]
    if which == "breaching":  # breached already, or at risk of it
        breached = {t.id for t in rows if t.sla_breached_at is not None}
        lines = [x for x in lines if x.at_risk or x.id in breached]
    return lines[:LIST_LIMIT]


def previous_working_day(day: date, config: Config) -> date:
    before = day - timedelta(days=1)
    for _ in range(31):  # a month of holidays at most
        if config.hours.is_working_day(before):
            return before
        before -= timedelta(days=1)
    return day - timedelta(days=1)


def _between(column: Any, start: datetime, end: datetime) -> Any:
    return (column >= start) & (column < end)


def desk_summary(s: Session, config: Config, now: datetime, day: date) -> dict[str, Any]:
    """The lead's figures: counts by status, breaches and first replies since the previous
    working day began, CSAT then and overall, the oldest open requests."""
    zone = config.hours.zone
    since_day = previous_working_day(day, config)
    start = datetime.combine(since_day, datetime.min.time(), zone)
    end = datetime.combine(day, datetime.min.time(), zone)
    counts = Counter(s.scalars(select(Ticket.status)))
    breached = list(s.scalars(select(Ticket).where(_between(Ticket.sla_breached_at, start, end))))
    answered = s.scalars(select(Ticket).where(_between(Ticket.first_response_at, start, end)))
    hours = [
        business_hours_between(as_utc(t.created_at), as_utc(t.first_response_at), config.hours)
        for t in answered
        if t.first_response_at is not None
    ]
    rated = Counter(s.scalars(select(Ticket.rating).where(_between(Ticket.rated_at, start, end))))
    overall = Counter(s.scalars(select(Ticket.rating).where(Ticket.rating.is_not(None))))
    oldest = s.scalars(
        select(Ticket)
        .where(Ticket.status.in_(OPEN_STATUSES))
        .order_by(Ticket.created_at, Ticket.id)
        .limit(OLDEST)
    )
    median = percentile(hours, 0.5)
    return {
        "since": since_day,
        "by_status": dict(sorted(counts.items())),
        "breaches": [line(t, config, now) for t in breached],
        "answered": len(hours),
        "median_hours": None if median is None else round(median, 1),
        "rated_good": rated.get("good", 0),
        "rated_bad": rated.get("bad", 0),
        "csat_pct": _pct(overall.get("good", 0), overall.get("good", 0) + overall.get("bad", 0)),
        "oldest": [line(t, config, now) for t in oldest],
    }


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None
