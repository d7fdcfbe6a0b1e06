"""Stage "bounce": a bounce finds the request whose mail failed, and the failed address of
its requester or a CC is marked undeliverable; mail from a marked address lifts the mark.

A bounce belongs to a request when it quotes a Message-ID the desk sent (DSNs, Exim and
qmail copy the original headers), or answers our mail by In-Reply-To/References. Only then is
an address marked: anyone can write a bounce, nobody else knows our Message-IDs. A bounce that
proves nothing but names a member of a request is still shown on that request's history.
flufl.bounce's finding alone makes a mail a bounce only when it quotes our own mail, so a
customer pasting a bounce into a mail to the desk is still a customer.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from maild.pipeline.base import Context, Match, Work
from maild.pipeline.records import ticket_of
from maild.replies.undeliverable import mark_undeliverable, wrote_again
from maild.store.events import add_event
from maild.store.models import Message, Ticket, TicketCc
from maild.tickets.bounces import BounceReport
from maild.tickets.loops import BOUNCE, Verdict

log = logging.getLogger(__name__)

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]


def sent_by_us(session: Session, ids: tuple[str, ...]) -> int | None:
    """The request of the first of ``ids`` that the desk sent, or None."""
    if not ids:
        return None
    m = _MESSAGES.c
    rows = session.connection().execute(
        select(m.message_id, m.ticket_id).where(
            m.message_id.in_(ids), m.direction == "out", m.ticket_id.is_not(None)
        )
    )
    found = {mid: int(tid) for mid, tid in rows}
    return next((found[mid] for mid in ids if mid in found), None)


def latest_request_of(session: Session, addresses: tuple[str, ...]) -> int | None:
    """The newest request with one of ``addresses`` as its requester or a CC."""
    if not addresses:
        return None
    as_requester = select(func.max(Ticket.id)).where(Ticket.requester.in_(addresses))
    as_cc = select(func.max(TicketCc.ticket_id)).where(TicketCc.email.in_(addresses))
    found = [session.scalar(as_requester), session.scalar(as_cc)]
    return max((int(t) for t in found if t is not None), default=None)


def _record(work: Work, ctx: Context, ticket: Ticket, report: BounceReport, proven: bool) -> Work:
    members = {ticket.requester, *(c.email for c in ticket.ccs)}
    named = [a for a in report.failed if a in members]
    marked = [a for a in named if a in report.permanent] if proven else []
    sender = work.parsed.from_addr if work.parsed else ""
    if marked:
        reason = f"bounce from {sender or '<>'} (inbound {work.inbound_id})"
        mark_undeliverable(ctx.session, marked, ctx.clock(), ticket.id, reason)
    add_event(
        ctx.session,
        ticket.id,
        ctx.clock(),
        "bounced",
        sender,
        failed=named or list(report.failed),
        undeliverable=marked,
        delayed=[a for a in named if a not in report.permanent],
        proof="quotes mail the desk sent" if proven else "quotes no mail the desk sent",
    )
    log.info(
        "inbound %d: bounce on #%d, failed %s, marked undeliverable %s",
        work.inbound_id,
        ticket.id,
        ", ".join(named or report.failed) or "-",
        ", ".join(marked) or "-",
    )
    return replace(work, match=Match(ticket.id, reason="bounce of the request's mail"))


class Bounce:
    name = "bounce"

    def __call__(self, work: Work, ctx: Context) -> Work:
        parsed, verdict = work.parsed, work.verdict
        assert parsed is not None and verdict is not None
        s = ctx.session
        if not verdict.automatic and parsed.from_addr and wrote_again(s, parsed.from_addr):
            log.info("inbound %d: %s wrote again: deliverable", work.inbound_id, parsed.from_addr)
        report = parsed.bounce
        if report is None or not report.failed:
            return work
        if verdict.automatic and verdict.kind != BOUNCE:
            return work
        sent = sent_by_us(s, report.quoted_ids)
        if not verdict.automatic:
            if sent is None or work.role != "customer":  # an agent pasting a bounce is an agent
                return work
            verdict = Verdict(BOUNCE, "flufl.bounce: a bounce of mail the desk sent")
            work = replace(work, verdict=verdict)
        proven = sent if sent is not None else (work.match.ticket_id if work.match else None)
        ticket = ticket_of(ctx, proven) if proven is not None else None
        if ticket is None:
            fallback = latest_request_of(s, report.failed)
            ticket = ticket_of(ctx, fallback) if fallback is not None else None
        if ticket is None:
            return work
        return _record(work, ctx, ticket, report, proven is not None and ticket.id == proven)
