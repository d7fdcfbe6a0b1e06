"""Honest delays: the new time a customer is told when the first promise was missed (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from maild.core.clock import as_utc
from maild.tickets.sla import add_business_hours

if TYPE_CHECKING:
    from maild.config import Config
    from maild.store.models import Ticket


def new_time(ticket: Ticket, config: Config, breached: datetime) -> datetime:
    """Another full target from the breach, in business hours: the estimate we can keep."""
    hours = config.sla.hours(ticket.type, ticket.priority, ticket.category)
    return add_business_hours(as_utc(breached), hours, config.hours)


def promised_time(ticket: Ticket, config: Config) -> datetime | None:
    """What the customer was last promised: the due time, or the new time after a breach."""
    if ticket.sla_breached_at is not None and config.sla.tell_customer:
        return new_time(ticket, config, ticket.sla_breached_at)
    return as_utc(ticket.due_at) if ticket.due_at is not None else None
