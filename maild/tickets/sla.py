"""The desk's clocks: working hours added to an instant in its time zone, and the timings of
survey, auto-close, pending and hold (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ClockConfig:
    """Survey, auto-close, pending and hold timings (``[survey]``, ``[autoclose]``, ...)."""

    survey_delay_hours: float = 24.0
    survey_valid_days: int = 30
    autoclose_days: float = 7.0
    pending_remind_days: float = 3.0
    pending_solve_days: float = 7.0
    hold_remind_hours: float = 24.0


@dataclass(frozen=True)
class BusinessHours:
    timezone: str = "UTC"
    days: frozenset[int] = frozenset(range(5))
    start: time = time(9, 0)
    end: time = time(18, 0)
    holidays: frozenset[date] = frozenset()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.days and day not in self.holidays


def _next_opening(local: datetime, cal: BusinessHours) -> datetime:
    """The first working instant at or after ``local`` (desk-local, aware)."""
    day = local.date()
    for _ in range(3 * 366):
        if cal.is_working_day(day):
            opens = datetime.combine(day, cal.start, local.tzinfo)
            closes = datetime.combine(day, cal.end, local.tzinfo)
            if local < opens:
                return opens
            if local < closes:
                return local
        day += timedelta(days=1)
        local = datetime.combine(day, time(0, 0), local.tzinfo)
    raise ValueError("no working day in the next three years: check [hours]")


def add_business_hours(start: datetime, hours: float, cal: BusinessHours) -> datetime:
    """``start`` plus ``hours`` of working time; returned in UTC."""
    local = start.astimezone(cal.zone)
    remaining = timedelta(hours=hours)
    while True:
        local = _next_opening(local, cal)
        closes = datetime.combine(local.date(), cal.end, local.tzinfo)
        if local + remaining <= closes:
            return (local + remaining).astimezone(UTC)
        remaining -= closes - local
        local = closes
