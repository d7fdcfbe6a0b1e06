"""Related open requests for an agent's notification: the same requester's, or alike in text
("check the related requests first")."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import ColumnElement, bindparam, func, or_, select
from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import as_utc
from maild.store.direct import Statement
from maild.store.models import Ticket
from maild.tickets.incidents import jaccard

log = logging.getLogger(__name__)

LIMIT = 3
SCAN = 200  # open requests of the window compared by text, at most
DONE = ("solved", "closed")


def _open(ticket: Ticket) -> tuple[ColumnElement[bool], ...]:
    """Other requests still open, not merged away, neither this one's problem nor incidents
    (those are listed as such)."""
    mine = (Ticket.id != ticket.id, Ticket.status.not_in(DONE), Ticket.merged_into.is_(None))
    family: list[ColumnElement[bool]] = [
        Ticket.problem_id.is_(None) | (Ticket.problem_id != ticket.id)
    ]
    if ticket.problem_id is not None:
        family.append(Ticket.id != ticket.problem_id)
    return (*mine, *family)


# Compiled once: these run for every agent notification.
_NOT_FAMILY = (
    Ticket.id != bindparam("me"),
    Ticket.status.not_in(DONE),
    Ticket.merged_into.is_(None),
    or_(Ticket.problem_id.is_(None), Ticket.problem_id != bindparam("me")),
    Ticket.id != bindparam("problem"),
)
_SAME = Statement(
    select(Ticket.id)
    .where(Ticket.requester == bindparam("who"), *_NOT_FAMILY)
    .order_by(Ticket.id.desc())
    .limit(bindparam("limit"))
)
_STILL_OPEN = select(Ticket.id).where(Ticket.id.in_(bindparam("ids", expanding=True)), *_NOT_FAMILY)
_LINES = select(Ticket.id, Ticket.requester, Ticket.subject).where(
    Ticket.id.in_(bindparam("ids", expanding=True))
)


def related_ids(
    session: Session,
    ticket: Ticket,
    config: Config,
    limit: int = LIMIT,
    alike: Sequence[int] | None = None,
) -> list[int]:
    """Up to ``limit`` open requests: the same requester's first, then alike ones in text
    (opened within `[incident] window_minutes` of this one), newest first. ``alike``: the ids
    the incident stage already found alike (best first), which saves the scan."""
    conn = session.connection()
    params = {"me": ticket.id, "problem": ticket.problem_id or -1, "who": ticket.requester}
    found = [int(i) for i in _SAME.scalars(conn, {**params, "limit": limit})]
    mine = frozenset((ticket.fingerprint or "").split())
    if len(found) >= limit or not mine:
        return found[:limit]
    if alike is not None:
        wanted = [i for i in alike if i not in found][: 4 * limit]
        if not wanted:
            return found
        still = set(conn.execute(_STILL_OPEN, {**params, "ids": wanted}).scalars())
        return [*found, *(i for i in wanted if i in still)][:limit]
    window = timedelta(minutes=config.incident.window_minutes)
    at = as_utc(ticket.created_at)
    near = select(Ticket.id, Ticket.fingerprint).where(
        Ticket.fingerprint.is_not(None),
        Ticket.created_at >= at - window,
        Ticket.created_at <= at + window,
        *_open(ticket),
    )
    rows = session.execute(near.order_by(Ticket.id.desc()).limit(SCAN))
    level = config.incident.similarity
    for ident, words in rows:
        if ident not in found and jaccard(mine, frozenset((words or "").split())) >= level:
            found.append(int(ident))
            if len(found) >= limit:
                break
    return found


def related_lines(
    session: Session, ticket: Ticket, config: Config, alike: Sequence[int] | None = None
) -> list[str]:
    """The related open requests as the notification lists them: number, who, subject."""
    ids = related_ids(session, ticket, config, alike=alike)
    if not ids:
        return []
    rows = session.connection().execute(_LINES, {"ids": ids})  # never changed: no flush
    by_id = {int(i): f"#{i}  {who}  {subject[:80]}" for i, who, subject in rows}
    return [by_id[i] for i in ids if i in by_id]


def incident_fields(session: Session, ticket: Ticket, config: Config) -> dict[str, object]:
    """What `maild show N --json` adds: ``problem`` (its problem's number or null),
    ``incidents`` (numbers), ``merged_into`` (number or null), ``related`` (numbers)."""
    stmt = select(Ticket.id).where(Ticket.problem_id == ticket.id).order_by(Ticket.id)
    return {
        "problem": ticket.problem_id,
        "incidents": [int(i) for i in session.scalars(stmt)],
        "merged_into": ticket.merged_into,
        "related": related_ids(session, ticket, config),
    }


def incident_counts(session: Session) -> dict[int, int]:
    """Each problem's number of incidents, for `maild tickets`."""
    stmt = (
        select(Ticket.problem_id, func.count(Ticket.id))
        .where(Ticket.problem_id.is_not(None))
        .group_by(Ticket.problem_id)
    )
    return {int(p or 0): int(n) for p, n in session.execute(stmt)}
