"""Working time between two instants and how much of an SLA target it uses (pure)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from maild.tickets.sla import BusinessHours

log = logging.getLogger(__name__)


def business_hours_between(start: datetime, end: datetime, cal: BusinessHours) -> float:
    """Working hours from ``start`` to ``end`` (0 when ``end`` is not after ``start``)."""
    if end <= start:
        return 0.0
    zone = cal.zone
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    total = timedelta()
    day = local_start.date()
    while day <= local_end.date():
        if cal.is_working_day(day):
            opens = datetime.combine(day, cal.start, zone)
            closes = datetime.combine(day, cal.end, zone)
            lo, hi = max(opens, local_start), min(closes, local_end)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total.total_seconds() / 3600


def sla_progress(created: datetime, due: datetime, now: datetime, cal: BusinessHours) -> float:
    """The share of the target used at ``now``: 0.8 is 80 %, 1.0 the breach.

    The target is the working time from ``created`` to the stored ``due``, so a request whose
    due time was set by hand (a task's due date) is measured against that promise.
    """
    target = business_hours_between(created, due, cal)
    if target <= 0:
        return 1.0 if now >= due else 0.0
    if now >= due:
        return max(1.0, business_hours_between(created, now, cal) / target)
    return business_hours_between(created, now, cal) / target
