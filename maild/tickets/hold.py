"""When a department's answer can be promised: the desk's practice, in desk-local time (pure)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from maild.tickets.sla import BusinessHours

EVENING = time(17, 0)


def next_working_day(day: date, cal: BusinessHours) -> date:
    for _ in range(3 * 366):
        day += timedelta(days=1)
        if cal.is_working_day(day):
            return day
    raise ValueError("no working day in the next three years: check [hours]")


def answer_window(now: datetime, cal: BusinessHours, evening: time = EVENING) -> tuple[str, date]:
    """("today-or-tomorrow" | "tomorrow" | "next-working-day", the day the answer is due by).

    Before 17:00 on a working day: by the end of the day or tomorrow. After 17:00: tomorrow,
    it is evening already. On a weekend or holiday, or on the evening before one (Friday):
    the first working day.
    """
    local = now.astimezone(cal.zone)
    today = local.date()
    if not cal.is_working_day(today):
        return "next-working-day", next_working_day(today, cal)
    if local.time() < evening:
        return "today-or-tomorrow", next_working_day(today, cal)
    tomorrow = today + timedelta(days=1)
    if cal.is_working_day(tomorrow):
        return "tomorrow", tomorrow
    return "next-working-day", next_working_day(today, cal)
