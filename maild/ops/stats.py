"""Desk figures for `maild stats`: counts, first-response times, SLA compliance, CSAT."""

from __future__ import annotations

import logging
import math
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.core.clock import as_utc
from maild.scheduler.elapsed import business_hours_between
from maild.store.models import Ticket
from maild.tickets.sla import BusinessHours

log = logging.getLogger(__name__)


# Only what the figures need, so a large desk does not load every subject into memory.
COLUMNS = (
    Ticket.status,
    Ticket.type,
    Ticket.priority,
    Ticket.rating,
    Ticket.created_at,
    Ticket.due_at,
    Ticket.first_response_at,
)


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` 0.5 is the median); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _sla(rows: list[Any], now: datetime) -> dict[str, Any]:
    """Met: answered by the due time. Missed: answered late, or unanswered and overdue."""
    met = missed = 0
    for t in rows:
        if t.due_at is None:
            continue
        due = as_utc(t.due_at)
        answered = as_utc(t.first_response_at) if t.first_response_at else None
        if answered is not None:
            met, missed = (met + 1, missed) if answered <= due else (met, missed + 1)
        elif now > due:
            missed += 1
    total = met + missed
    return {"met": met, "missed": missed, "compliance_pct": _pct(met, total)}


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _first_response(rows: list[Any], cal: BusinessHours) -> dict[str, Any]:
    wall, business = [], []
    for t in rows:
        if t.first_response_at is None:
            continue
        start, end = as_utc(t.created_at), as_utc(t.first_response_at)
        wall.append((end - start).total_seconds() / 3600)
        business.append(business_hours_between(start, end, cal))
    return {
        "count": len(wall),
        "median_hours": _rounded(percentile(wall, 0.5)),
        "p90_hours": _rounded(percentile(wall, 0.9)),
        "median_business_hours": _rounded(percentile(business, 0.5)),
        "p90_business_hours": _rounded(percentile(business, 0.9)),
    }


def desk_stats(session: Session, cal: BusinessHours, now: datetime) -> dict[str, Any]:
    """Every figure over all requests, as a plain dict (what `maild stats --json` prints)."""
    rows = list(session.execute(select(*COLUMNS)))
    ratings = Counter(t.rating for t in rows if t.rating)
    good, bad = ratings.get("good", 0), ratings.get("bad", 0)
    return {
        "requests": len(rows),
        "by_status": dict(sorted(Counter(t.status for t in rows).items())),
        "by_type": dict(sorted(Counter(t.type for t in rows).items())),
        "by_priority": dict(sorted(Counter(t.priority for t in rows).items())),
        "first_response": _first_response(rows, cal),
        "sla": _sla(rows, as_utc(now)),
        "csat": {"good": good, "bad": bad, "csat_pct": _pct(good, good + bad)},
    }
