"""Stage "notify": the acknowledgement of a new request, unless the sender gets too many."""

from __future__ import annotations

import logging

from maild.pipeline.apply import add_event
from maild.pipeline.base import Context, Work
from maild.replies.compose import AUTO_REPLIED, Outgoing, new_message_id
from maild.replies.outbox import enqueue, may_auto_reply
from maild.replies.render import when_text
from maild.store.models import Ticket
from maild.threading.tags import tagged_subject

log = logging.getLogger(__name__)


def acknowledgement(ticket: Ticket, work: Work, ctx: Context) -> Outgoing:
    parsed = work.parsed
    assert parsed is not None and ticket.due_at is not None
    desk, now = ctx.config.desk, ctx.clock()
    due_text = when_text(ticket.due_at, now, ticket.language, desk.timezone)
    text, html = ctx.renderer.render(
        ticket.language,
        "ack",
        desk=desk,
        ticket=ticket,
        name=ticket.requester_name,
        due_text=due_text,
        parent_id=ticket.parent_id if work.match else None,
    )
    return Outgoing(
        sender_name=desk.name,
        sender=ctx.config.outbound.sender,
        to=(ticket.requester,),
        subject=tagged_subject(desk.tag, ticket.id, parsed.subject),
        text=text,
        html=html,
        message_id=new_message_id(desk.domain, f"ack.{ticket.id}"),
        loop_name=desk.address,
        language=ticket.language,
        date=now,
        in_reply_to=parsed.message_id,
        references=parsed.references,
        auto_submitted=AUTO_REPLIED,
    )


class Notify:
    name = "notify"

    def __call__(self, work: Work, ctx: Context) -> Work:
        if not work.created or work.ticket_id is None:
            return work
        ticket = ctx.session.get(Ticket, work.ticket_id)
        assert ticket is not None
        limit = ctx.config.limits.auto_replies_per_hour
        if not may_auto_reply(ctx.session, ticket.requester, ctx.clock(), limit):
            add_event(
                ctx.session,
                ticket.id,
                ctx,
                "ack-suppressed",
                reason=f"more than {limit} automatic replies to {ticket.requester}/hour",
            )
            log.warning(
                "request #%d: no acknowledgement, %s got %d automatic replies this hour",
                ticket.id,
                ticket.requester,
                limit,
            )
            return work
        enqueue(ctx.session, acknowledgement(ticket, work, ctx), ticket_id=ticket.id, kind="ack")
        add_event(ctx.session, ticket.id, ctx, "acknowledged")
        return work
