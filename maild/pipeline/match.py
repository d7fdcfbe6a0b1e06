"""Stage "match-ticket": the subject tag, then In-Reply-To/References; only members may join."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session

from maild.pipeline.base import Context, Match, Work
from maild.pipeline.msgids import ticket_by_refs
from maild.pipeline.records import answers_us, ticket_of
from maild.store.models import Ticket, TicketCc
from maild.threading.tags import find_ticket_number


def is_member(session: Session, ticket: Ticket, work: Work) -> bool:
    """Requester, a CC of the request, or a proven agent or department.

    A bare agent From (no proof) is a stranger here: its mail becomes a new request linked to
    this one, as anyone else's would; see the "identify" stage.
    """
    address = work.parsed.from_addr if work.parsed else ""
    if not address:
        return False
    if work.role in ("agent", "department"):
        return True
    if address == ticket.requester:
        return True
    cc = session.get(TicketCc, (ticket.id, address))
    return cc is not None


class MatchTicket:
    name = "match-ticket"

    def __call__(self, work: Work, ctx: Context) -> Work:
        parsed, verdict = work.parsed, work.verdict
        assert parsed is not None and verdict is not None
        s = ctx.session
        ticket, how = None, ""
        if work.proven_ticket is not None:
            ticket, how = ticket_of(ctx, work.proven_ticket), "signed Message-ID"
        number = (
            None if ticket is not None else find_ticket_number(parsed.subject, ctx.config.desk.tag)
        )
        if ticket is None and number is not None:
            ticket, how = ticket_of(ctx, number), "tag"
        if ticket is None:
            refs = (*parsed.references, *parsed.in_reply_to)
            tid = ticket_by_refs(ctx, refs, parsed.from_addr)
            ticket, how = (ticket_of(ctx, tid), "references") if tid is not None else (None, "")
        if ticket is None:
            return replace(work, match=Match(None, reason="no thread"))
        if ticket.merged_into is not None and work.role == "customer":  # #merge: continues there
            ticket, how = ticket_of(ctx, ticket.merged_into), f"{how}, merged into"
            assert ticket is not None
        if verdict.automatic:
            # A bounce or auto-reply joins by answering mail we sent; a copied tag is not enough.
            if is_member(s, ticket, work) or answers_us(ctx, ticket, parsed):
                return replace(work, match=Match(ticket.id, reason=how))
            return replace(work, match=Match(None, reason=f"{how}: automatic mail from a stranger"))
        if is_member(s, ticket, work):
            return replace(work, match=Match(ticket.id, reason=how))
        return replace(
            work,
            match=Match(
                None, linked_to=ticket.id, reason=f"{how}: sender is not on request #{ticket.id}"
            ),
        )
