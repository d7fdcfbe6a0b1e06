"""Hand a request to another department, and tell the customer when to expect an answer."""

from __future__ import annotations

from sqlalchemy import select

from maild.config.sections import Department
from maild.replies.context import MailContext
from maild.replies.kinds import customer_mail, staff_mail
from maild.replies.outbox import enqueue
from maild.replies.render import day_text, local_time
from maild.replies.words import name_of
from maild.store.models import Blob, Message, Ticket
from maild.tickets.hold import answer_window
from maild.tickets.status import change_status
from maild.tickets.words import Status


def _history(ctx: MailContext, ticket: Ticket) -> tuple[list[dict[str, str]], Message | None]:
    msgs = list(
        ctx.session.scalars(
            select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)
        )
    )
    desk = ctx.config.desk
    lines = [
        {
            "at": local_time(m.created_at, desk.timezone, desk.language),
            "who": f"{name_of(m.kind, desk.language)} {m.from_addr}",
            "line": (m.text.strip().splitlines() or [""])[0][:100],
        }
        for m in msgs[-30:]
    ]
    last = next((m for m in reversed(msgs) if m.kind == "customer"), None)
    return lines, last


def _attachments(ctx: MailContext, message: Message | None) -> tuple[tuple[str, str, bytes], ...]:
    if message is None:
        return ()
    found = []
    for att in message.attachments:
        blob = ctx.session.get(Blob, att.sha256)
        if blob is not None:
            found.append((att.filename, att.content_type, blob.data))
    return tuple(found)


def escalate(
    ticket: Ticket, ctx: MailContext, agent_name: str, dept: Department, note: str, text: str
) -> None:
    """Put ``ticket`` on hold for ``dept``: mail the department, tell the customer when."""
    cfg, now = ctx.config, ctx.clock()
    history, last = _history(ctx, ticket)
    if change_status(ticket, Status.HOLD, now, cfg.clock, department=dept.name) is None:
        # Asked again while waiting for it: a new escalation, whose reminders start afresh.
        ticket.status_since, ticket.reminded_at = now, None
    to_dept = staff_mail(
        ctx,
        ticket,
        dept.email,
        "escalation",
        proof="e",
        department=dept,
        agent_name=agent_name,
        note=note,
        history=history,
        last_text=last.text if last else "",
        attachments=_attachments(ctx, last),
    )
    enqueue(
        ctx,
        to_dept,
        ticket_id=ticket.id,
        kind="escalation",
        message_kind="system",
        automatic=False,
    )
    _tell_customer(ticket, ctx, dept, text)


def _tell_customer(ticket: Ticket, ctx: MailContext, dept: Department, text: str) -> None:
    """The agent's words and the practice's promise for the hour of the day."""
    window, day = answer_window(ctx.clock(), ctx.config.hours)
    to_customer = customer_mail(
        ctx,
        ticket,
        "hold_interim",
        prefix=text,
        auto=None,
        quote=True,
        department=dept,
        window=window,
        day=day_text(day, ticket.language),
    )
    enqueue(
        ctx,
        to_customer,
        ticket_id=ticket.id,
        kind="hold-interim",
        message_kind="agent",
        automatic=False,
    )
