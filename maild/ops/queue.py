"""The queue as lists: filtered request rows for `maild tickets` (and the digest and board)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import Session

from maild.core.clock import as_utc
from maild.store.models import Message, Ticket

log = logging.getLogger(__name__)

OPEN_STATUSES = ("new", "open", "pending", "hold")
UNASSIGNED = "none"  # `--assignee none`: requests nobody has taken


@dataclass(frozen=True)
class TicketFilter:
    """What to list; every field is optional (None lists everything)."""

    status: str | None = None
    assignee: str | None = None
    requester: str | None = None
    since: datetime | None = None
    search: str | None = None
    limit: int | None = None
    type: str | None = None
    priority: str | None = None
    open_only: bool = False  # new, open, pending and hold only


def _like(words: str) -> str:
    escaped = words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _search(stmt: Select[Ticket], words: str) -> Select[Ticket]:
    """Every word must appear in the subject, the requester or the text of a message."""
    for word in words.split():
        pattern = _like(word)
        in_text = exists().where(
            Message.ticket_id == Ticket.id, Message.text.ilike(pattern, escape="\\")
        )
        stmt = stmt.where(
            or_(
                Ticket.subject.ilike(pattern, escape="\\"),
                Ticket.requester.ilike(pattern, escape="\\"),
                Ticket.requester_name.ilike(pattern, escape="\\"),
                in_text,
            )
        )
    return stmt


def find_tickets(s: Session, f: TicketFilter) -> list[Ticket]:
    """Requests matching ``f`` in number order; with a limit, the newest ``limit`` of them."""
    stmt = select(Ticket)
    if f.status:
        stmt = stmt.where(Ticket.status == f.status.lower())
    if f.assignee:
        who = f.assignee.lower()
        stmt = stmt.where(
            Ticket.assignee.is_(None) if who == UNASSIGNED else Ticket.assignee == who
        )
    if f.type:
        stmt = stmt.where(Ticket.type == f.type.lower())
    if f.priority:
        stmt = stmt.where(Ticket.priority == f.priority.lower())
    if f.open_only:
        stmt = stmt.where(Ticket.status.in_(OPEN_STATUSES))
    if f.requester:
        stmt = stmt.where(Ticket.requester == f.requester.lower())
    if f.since is not None:
        stmt = stmt.where(Ticket.created_at >= as_utc(f.since))
    if f.search:
        stmt = _search(stmt, f.search)
    if f.limit is not None:
        rows = list(s.scalars(stmt.order_by(Ticket.id.desc()).limit(f.limit)))
        return rows[::-1]
    return list(s.scalars(stmt.order_by(Ticket.id)))


def age_text(since: datetime, now: datetime) -> str:
    """A short age: 45m, 5h, 3d."""
    delta = max(as_utc(now) - as_utc(since), timedelta(0))
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h"
    return f"{minutes // (24 * 60)}d"
