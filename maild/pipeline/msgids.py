"""Message-IDs as threading keys: which stored message a reference follows, who may claim one.

Inbound Message-IDs are not unique: anyone can write any id. So a reference threads onto a
request only through a message the desk sent or one a member of that request wrote
(requester, CC, agent, department), and an inbound mail's id is indexed for threading only
when no other sender (and not the desk) holds it already and it is not of the desk's domain.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Table, bindparam, or_, select

from maild.config import Config
from maild.ingest.parse import ParsedMail
from maild.pipeline.base import Context
from maild.store.direct import Statement
from maild.store.models import Message, Ticket, TicketCc
from maild.threading.refs import is_own_msgid

log = logging.getLogger(__name__)

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_TICKETS: Table = Ticket.__table__  # type: ignore[assignment]
_CCS: Table = TicketCc.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Holder:
    """A stored message (on a request) that carries a referenced Message-ID."""

    row: int
    ticket_id: int
    outgoing: bool
    from_addr: str
    requester: str


def _holders(ctx: Context, refs: Sequence[str]) -> dict[str, list[Holder]]:
    m, t = _MESSAGES.c, _TICKETS.c
    rows = ctx.session.connection().execute(
        select(m.id, m.message_id, m.ticket_id, m.direction, m.from_addr, t.requester)
        .join_from(_MESSAGES, _TICKETS, m.ticket_id == t.id)
        .where(m.message_id.in_(list(set(refs))))
    )
    found: dict[str, list[Holder]] = {}
    for row_id, mid, tid, direction, sender, requester in rows:
        holder = Holder(int(row_id), int(tid), direction == "out", sender or "", requester)
        found.setdefault(str(mid), []).append(holder)
    return found


def _ccs_among(ctx: Context, holders: list[Holder]) -> set[tuple[int, str]]:
    """(request, address) pairs of the holders' authors that are CCs of that request."""
    cfg = ctx.config
    wanted = [h for h in holders if not _vouched_without_ccs(h, cfg)]
    if not wanted:
        return set()
    c = _CCS.c
    rows = ctx.session.connection().execute(
        select(c.ticket_id, c.email).where(
            c.ticket_id.in_({h.ticket_id for h in wanted}),
            c.email.in_({h.from_addr for h in wanted}),
        )
    )
    return {(int(tid), str(email)) for tid, email in rows}


def _vouched_without_ccs(holder: Holder, config: Config) -> bool:
    if holder.outgoing or holder.from_addr == holder.requester:
        return True
    sender = holder.from_addr
    return bool(sender) and (
        config.agent(sender) is not None or config.department(sender) is not None
    )


def ticket_by_refs(ctx: Context, refs: Sequence[str], sender: str) -> int | None:
    """The request of the nearest referenced message the desk sent or a member of its request
    wrote. Should several hold one id: the desk's own, then the sender's own, then the first."""
    if not refs:
        return None
    holders = _holders(ctx, refs)
    if not holders:
        return None
    ccs = _ccs_among(ctx, [h for found in holders.values() for h in found])
    for ref in reversed(refs):  # the nearest ancestor comes last
        valid = [
            h
            for h in holders.get(ref, ())
            if _vouched_without_ccs(h, ctx.config) or (h.ticket_id, h.from_addr) in ccs
        ]
        if valid:
            best = min(valid, key=lambda h: (not h.outgoing, h.from_addr != sender, h.row))
            return best.ticket_id
    return None


_HELD = Statement(  # asked for every inbound mail
    select(_MESSAGES.c.ticket_id, _MESSAGES.c.direction)
    .where(
        _MESSAGES.c.message_id == bindparam("mid"),
        or_(_MESSAGES.c.direction == "out", _MESSAGES.c.from_addr != bindparam("sender")),
    )
    .limit(1)
)


def unclaimable(ctx: Context, parsed: ParsedMail) -> dict[str, object] | None:
    """Why this mail's Message-ID must not be indexed for threading, or None if it may be.

    The desk's own domain is never claimed; an id already stored for a mail the desk sent or
    another sender wrote stays theirs (the mail itself is stored and threaded normally).
    """
    mid = parsed.message_id
    if not mid:
        return None
    if is_own_msgid(mid, ctx.config.desk.domain):
        return {"message_id": mid, "reason": "a Message-ID of the desk's own domain"}
    params = {"mid": mid, "sender": parsed.from_addr}
    other = _HELD.first(ctx.session, params)
    if other is None:
        return None
    held_by, direction = other
    who = "the desk" if direction == "out" else "another sender"
    return {"message_id": mid, "reason": f"already used by {who}", "held_by": held_by}
