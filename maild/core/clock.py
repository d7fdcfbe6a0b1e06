"""The one clock every piece of time logic reads; tests and `maild sweep --now` replace it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def fixed_clock(at: datetime) -> Clock:
    """A clock frozen at ``at`` (naive values are taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)

    def clock() -> datetime:
        return at

    return clock


def as_utc(value: datetime) -> datetime:
    """Databases hand back naive datetimes (SQLite); all of ours are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
