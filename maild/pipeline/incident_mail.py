"""The mail a problem causes: the customer's "we already know", the lead's alert and its
update when the count doubles, the agents' one notification and their digests.

Everything goes through the outbox (maild.replies.outbox): customer mail with ``enqueue``,
staff mail with ``enqueue_internal``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select

from maild.core.clock import as_utc
from maild.pipeline.base import Context, Work
from maild.pipeline.notify import notify_agents, recipients
from maild.replies.compose import AUTO_GENERATED, AUTO_REPLIED, new_message_id
from maild.replies.context import MailContext
from maild.replies.kinds import mail, staff_mail
from maild.replies.outbox import enqueue, enqueue_internal, may_auto_reply
from maild.store.events import add_event
from maild.store.models import Message, Ticket
from maild.threading.tags import tagged_subject
from maild.tickets.incidents import first_lines

log = logging.getLogger(__name__)

SAMPLES = 2
SUBJECT = {
    "en": ("Problem", "Problem update", "Digest"),
    "ru": ("Проблема", "Проблема растёт", "Сводка"),
}


def local_time(ctx: MailContext, at: datetime) -> str:
    """``at`` in the desk's time zone, with the zone: "2026-12-02 10:00 MSK"."""
    local = as_utc(at).astimezone(ctx.config.hours.zone)
    return local.strftime("%Y-%m-%d %H:%M %Z")


def incidents(session: Any, problem_id: int, after: datetime | None = None) -> list[Ticket]:
    stmt = select(Ticket).where(Ticket.problem_id == problem_id)
    if after is not None:
        stmt = stmt.where(Ticket.created_at > after)
    return list(session.scalars(stmt.order_by(Ticket.id)))


_COUNT = select(func.count(Ticket.id)).where(Ticket.problem_id == bindparam("problem"))


def incident_count(ctx: MailContext, problem: Ticket) -> int:
    return int(ctx.session.scalar(_COUNT, {"problem": problem.id}) or 0)


def known_ack(ctx: Context, ticket: Ticket, problem: Ticket, work: Work | None) -> None:
    """Tell the customer we already know about the problem and are working on it."""
    limit, now = ctx.config.limits.auto_replies_per_hour, ctx.clock()
    if not may_auto_reply(ctx.session, ticket.requester, now, limit):
        add_event(ctx.session, ticket.id, ctx.clock(), "ack-suppressed", reason=f"{limit}/hour")
        return
    out = mail(
        ctx,
        ticket,
        to=[ticket.requester],
        template="incident_ack",
        message_id=new_message_id(ctx.config.desk.domain, f"ack.{ticket.id}"),
        auto=AUTO_REPLIED,
        customer=True,
        name=ticket.requester_name,
        problem=problem,
    )
    if work is not None and work.parsed is not None and work.parsed.message_id:
        out = replace(out, in_reply_to=work.parsed.message_id)
    enqueue(ctx, out, ticket_id=ticket.id, kind="incident-ack")


def samples(ctx: MailContext, members: list[Ticket]) -> list[str]:
    """The first lines of the first customer mails of the first ``SAMPLES`` incidents."""
    found: list[str] = []
    for t in members[:SAMPLES]:
        stmt = (
            select(Message.text)
            .where(Message.ticket_id == t.id, Message.direction == "in")
            .order_by(Message.id)
            .limit(1)
        )
        text = ctx.session.scalar(stmt) or ""
        found.append(f"#{t.id} {t.requester}: " + " ".join(first_lines(text))[:300])
    return found


def _staff_mail(
    ctx: MailContext, problem: Ticket, to: str, template: str, label: int, **context: Any
) -> Any:
    cfg = ctx.config
    lang = cfg.desk.language
    out = staff_mail(ctx, problem, to, template, **context)
    tagged = tagged_subject(cfg.desk.tag, problem.id, problem.subject)
    return replace(out, subject=f"{SUBJECT[lang][label]}: {tagged}", auto_submitted=AUTO_GENERATED)


def lead(ctx: Context, problem: Ticket, *, update: bool) -> int:
    """The `[desk] lead` and the `[incident] notify` addresses: one mail a problem, and one
    each time the number of customers has doubled since they were last told."""
    members = incidents(ctx.session, problem.id)
    addresses = [ctx.config.desk.lead or "", *ctx.config.incident.notify]
    targets = list(dict.fromkeys(a for a in addresses if a))
    context = dict(
        count=len(members),
        customers=len({t.requester for t in members}),
        since=local_time(
            ctx, min((as_utc(t.created_at) for t in members), default=problem.created_at)
        ),
        samples=samples(ctx, members),
        numbers=", ".join(f"#{t.id}" for t in members),
        update=update,
    )
    mails = [
        _staff_mail(ctx, problem, to, "incident_alert", 1 if update else 0, **context)
        for to in targets
    ]
    enqueue_internal(ctx, mails, ticket_id=problem.id, kind="incident-alert")
    problem.incident_told = len(members)
    if not targets:
        log.warning("problem #%d: no [desk] lead or [incident] notify to tell", problem.id)
    return len(mails)


def agents_problem(ctx: Context, problem: Ticket) -> int:
    """One notification to the agents for the problem (replying to it answers everyone)."""
    members = incidents(ctx.session, problem.id)
    lines = [f"#{t.id}  {t.requester}  {t.subject}" for t in members]
    text = "\n".join([*samples(ctx, members), "", *lines])
    return notify_agents(problem, ctx, "problem", "", text)


def send_digest(ctx: MailContext, problem: Ticket, now: datetime) -> int:
    """One digest to the agents: the incidents that joined since the last one."""
    new = incidents(ctx.session, problem.id, problem.digest_sent_at)
    if not new:
        return 0
    total = incident_count(ctx, problem)
    to = recipients(problem, ctx, "")  # type: ignore[arg-type]
    mails = [_staff_mail(ctx, problem, a, "incident_digest", 2, new=new, total=total) for a in to]
    enqueue_internal(ctx, mails, ticket_id=problem.id, kind="incident-digest")
    problem.digest_sent_at = now
    return len(mails)


def digest_if_due(ctx: Context, problem: Ticket) -> int:
    """A digest now if the last one is `[incident] digest_minutes` old; else the sweep's."""
    now, every = ctx.clock(), timedelta(minutes=ctx.config.incident.digest_minutes)
    last = problem.digest_sent_at
    if last is not None and as_utc(last) + every > now:
        return 0
    return send_digest(ctx, problem, now)
