"""Status changes and the clock columns they start or stop (pure: works on the Ticket row)."""

from __future__ import annotations

from datetime import datetime, timedelta

from maild.store.models import Ticket
from maild.tickets.sla import ClockConfig
from maild.tickets.words import STATUSES, Status


def change_status(
    ticket: Ticket, new: Status, now: datetime, clock: ClockConfig, department: str | None = None
) -> tuple[str, str] | None:
    """Move ``ticket`` to ``new``; returns (old, new), or None when nothing changes.

    solved starts the survey clock; leaving solved before the survey went out cancels it;
    closed is final for the survey; hold remembers the department it waits for.
    """
    if new not in STATUSES:
        raise ValueError(f"unknown status {new!r}")
    old = ticket.status
    if old == new and (new != "hold" or department == ticket.hold_department):
        return None
    ticket.status = new
    ticket.status_since = now
    ticket.updated_at = now
    ticket.reminded_at = None
    ticket.hold_department = department if new == "hold" else None
    if new == "solved":
        ticket.solved_at = now
        ticket.survey_due_at = now + timedelta(hours=clock.survey_delay_hours)
        ticket.survey_sent_at = None
    elif ticket.survey_sent_at is None:
        ticket.survey_due_at = None
    if new == "closed":
        ticket.closed_at = now
    return old, new
