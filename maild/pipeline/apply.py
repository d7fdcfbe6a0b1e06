"""Stage "apply": the message row, the request's new state and its history, in one transaction."""

from __future__ import annotations

import logging
from dataclasses import replace

from maild.ingest.parse import ParsedMail
from maild.pipeline.agent import handle_agent
from maild.pipeline.base import Context, Work
from maild.pipeline.ccs import CcChange, add_ccs
from maild.pipeline.query import answer_query, parse_query
from maild.pipeline.records import answers_us, new_ticket, store_message, ticket_of
from maild.store.events import add_event
from maild.store.models import Ticket
from maild.tickets.status import change_status
from maild.tickets.words import Action, Status

log = logging.getLogger(__name__)


def _automatic(work: Work, ctx: Context, parsed: ParsedMail) -> Work:
    verdict, match = work.verdict, work.match
    assert verdict is not None and match is not None
    # An agent's or a department's autoresponder: an internal note, never relayed, no command,
    # no first response, and it never counts as the agent acting on the request.
    staff = work.role in ("agent", "department") and match.ticket_id is not None
    msg_id = store_message(work, ctx, match.ticket_id, "note" if staff else verdict.kind)
    if match.ticket_id is not None:
        add_event(
            ctx.session,
            match.ticket_id,
            ctx.clock(),
            "automatic-mail",
            parsed.from_addr,
            classified_as=verdict.kind,
            reason=verdict.reason,
            message=msg_id,
            **({"role": work.role, "stored_as": "note"} if staff else {}),
        )
    log.info(
        "inbound %d: %s (%s), %s",
        work.inbound_id,
        verdict.kind,
        verdict.reason,
        f"on #{match.ticket_id}" if match.ticket_id else "kept unattached",
    )
    return replace(work, ticket_id=match.ticket_id, action=Action.AUTOMATIC)


def _left_out_detail(ccs: CcChange) -> dict[str, object]:
    """For the history: the Cc addresses left out over `[limits] max_cc`, if any."""
    if not ccs.left_out_count:
        return {}
    return {"cc_left_out": list(ccs.left_out), "cc_left_out_count": ccs.left_out_count}


def _create(work: Work, ctx: Context, parsed: ParsedMail, parent: int | None) -> Work:
    ticket = new_ticket(ctx, parsed, parent, alike=work.role == "customer")
    msg_id = store_message(work, ctx, ticket.id, "customer")
    if parsed.message_id:  # the whole thread so far is this one message
        ctx.cache[("thread", ticket.id)] = (parsed.message_id, (parsed.message_id,))
    ccs = add_ccs(ticket, parsed, ctx)
    add_event(
        ctx.session,
        ticket.id,
        ctx.clock(),
        "created",
        parsed.from_addr,
        message=msg_id,
        cc=list(ccs.added),
        linked_to=parent,
        proof=work.proof or None,
        routed_to=ticket.assignee,  # a key client's manager ([[routing]]), else None
        **_left_out_detail(ccs),
    )
    if parent is not None:
        why = {"ticket": ticket.id, "reason": work.match.reason if work.match else ""}
        add_event(ctx.session, parent, ctx.clock(), "linked", parsed.from_addr, **why)
    log.info(
        "inbound %d: new request #%d from %s%s",
        work.inbound_id,
        ticket.id,
        parsed.from_addr,
        f" (linked to #{parent})" if parent else "",
    )
    return replace(
        work,
        ticket_id=ticket.id,
        created=True,
        action=Action.CREATED,
        cc_change=ccs,
    )


def _customer_reply(work: Work, ctx: Context, parsed: ParsedMail, ticket: Ticket) -> Work:
    if ticket.status == "closed":
        # Closed is final: the customer's new message becomes a follow-up request.
        return _create(work, ctx, parsed, ticket.id)
    now = ctx.clock()
    msg_id = store_message(work, ctx, ticket.id, "customer")
    detail: dict[str, object] = {"message": msg_id}
    ccs = CcChange()
    if work.proof:
        detail["alert"] = work.proof
    if ticket.status in ("new", "pending", "solved"):
        old = ticket.status
        change_status(ticket, Status.OPEN, now, ctx.config.clock)
        detail["status"] = [old, "open"]
    if parsed.from_addr == ticket.requester and answers_us(ctx, ticket, parsed):
        # Only a reply to mail we sent may widen the circle: a forged From copying the tag
        # must not add a reader to someone else's request.
        ccs = add_ccs(ticket, parsed, ctx)
        detail.update(cc=list(ccs.added), **_left_out_detail(ccs))
    ticket.updated_at = ticket.last_customer_at = now
    add_event(
        ctx.session,
        ticket.id,
        ctx.clock(),
        "reopened" if detail.get("status") == ["solved", "open"] else "customer-reply",
        parsed.from_addr,
        **detail,
    )
    log.info(
        "inbound %d: customer reply on #%d%s",
        work.inbound_id,
        ticket.id,
        " (re-opened)" if detail.get("status") == ["solved", "open"] else "",
    )
    return replace(
        work,
        ticket_id=ticket.id,
        action=Action.CUSTOMER_REPLY,
        cc_change=ccs,
    )


def _department(work: Work, ctx: Context, parsed: ParsedMail, ticket: Ticket) -> Work:
    msg_id = store_message(work, ctx, ticket.id, "department")
    dept = ctx.config.department(parsed.from_addr)
    ticket.updated_at = ctx.clock()
    add_event(
        ctx.session,
        ticket.id,
        ctx.clock(),
        "department-reply",
        parsed.from_addr,
        department=dept.name if dept else "",
        message=msg_id,
        proof=work.proof,
    )
    log.info(
        "inbound %d: department %s answered on #%d", work.inbound_id, parsed.from_addr, ticket.id
    )
    return replace(work, ticket_id=ticket.id, action=Action.DEPARTMENT)


class Apply:
    name = "apply"

    def __call__(self, work: Work, ctx: Context) -> Work:
        parsed, verdict, match = work.parsed, work.verdict, work.match
        assert parsed is not None and verdict is not None and match is not None
        if verdict.automatic:
            return _automatic(work, ctx, parsed)
        if work.role == "agent" and (query := parse_query(parsed.text, work)) is not None:
            return answer_query(work, ctx, query)
        ticket = ticket_of(ctx, match.ticket_id) if match.ticket_id else None
        if ticket is None:
            return _create(work, ctx, parsed, match.linked_to)
        if work.role == "agent":
            return handle_agent(work, ctx, ticket)
        if work.role == "department":
            return _department(work, ctx, parsed, ticket)
        return _customer_reply(work, ctx, parsed, ticket)
