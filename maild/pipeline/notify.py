"""Stage "notify": the customer's acknowledgement and the agents' notifications."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from maild.knowledge.similar import (
    Article,
    Stock,
    scored_articles,
    similar_lines,
    stock,
    suggestions,
)
from maild.pipeline.base import Context, Work
from maild.pipeline.ccs import left_out_note
from maild.pipeline.records import ticket_of
from maild.pipeline.related import related_lines
from maild.replies.compose import AUTO_GENERATED, AUTO_REPLIED, Outgoing, new_message_id
from maild.replies.customer import finish
from maild.replies.kinds import staff_mail, staff_message_id, when
from maild.replies.outbox import enqueue, enqueue_internal, may_auto_reply
from maild.replies.render import when_text
from maild.store.events import add_event
from maild.store.models import Ticket
from maild.threading.tags import tagged_subject

log = logging.getLogger(__name__)

NOTIFY_ON = {"created": "new", "customer-reply": "reply", "department": "department"}


def _closed_parent(ticket: Ticket, ctx: Context) -> int | None:
    """The earlier request to mention: only the same customer's own, closed one."""
    if ticket.parent_id is None:
        return None
    parent = ticket_of(ctx, ticket.parent_id)
    ok = parent is not None and parent.status == "closed" and parent.requester == ticket.requester
    return ticket.parent_id if ok else None


def acknowledgement(ticket: Ticket, work: Work, ctx: Context) -> Outgoing:
    parsed = work.parsed
    assert parsed is not None and ticket.due_at is not None
    desk, now = ctx.config.desk, ctx.clock()
    due_text = when_text(ticket.due_at, now, ticket.language, desk.timezone)
    manager = ctx.config.agent(ticket.assignee) if ticket.assignee else None
    body, body_html = ctx.renderer.render(
        ticket.language,
        "ack",
        desk=desk,
        ticket=ticket,
        name=ticket.requester_name,
        due_text=due_text,
        manager=(manager.name if manager else ticket.assignee) or "",
        parent_id=_closed_parent(ticket, ctx),
        articles=suggestions(
            ctx.session.connection(), ctx.config, _words(ticket, work), _articles(ticket, work, ctx)
        ),
    )
    text, html = finish(ctx, ticket, ticket.language, body, body_html, now, automatic=True)
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


def _words(ticket: Ticket, work: Work) -> str:
    """What the new request is about, for the knowledge base (maild.knowledge.similar)."""
    return f"{ticket.subject}\n{work.parsed.text if work.parsed else ''}"


def _stock(ctx: Context) -> Stock:
    """Whether there are solved requests and articles to search: asked once a message."""
    found = ctx.cache.get("stock")
    if not isinstance(found, Stock):
        found = ctx.cache["stock"] = stock(ctx.session.connection())
    return found


def _articles(ticket: Ticket, work: Work, ctx: Context) -> list[Article]:
    """The articles found for a new request: searched once for the acknowledgement and the
    agents' notification."""
    key = ("articles", ticket.id)
    found = ctx.cache.get(key)
    if not isinstance(found, list):
        conn, words, url = ctx.session.connection(), _words(ticket, work), ctx.config.web.base_url
        found = ctx.cache[key] = scored_articles(conn, words, url, _stock(ctx))
    return found


def _acknowledge(ticket: Ticket, work: Work, ctx: Context) -> None:
    limit = ctx.config.limits.auto_replies_per_hour
    if not may_auto_reply(ctx.session, ticket.requester, ctx.clock(), limit):
        add_event(
            ctx.session,
            ticket.id,
            ctx.clock(),
            "ack-suppressed",
            reason=f"more than {limit} automatic replies to {ticket.requester}/hour",
        )
        log.warning(
            "request #%d: no acknowledgement, %s got %d automatic replies this hour",
            ticket.id,
            ticket.requester,
            limit,
        )
        return
    ack = acknowledgement(ticket, work, ctx)
    if enqueue(ctx, ack, ticket_id=ticket.id, kind="ack"):
        add_event(ctx.session, ticket.id, ctx.clock(), "acknowledged")


def recipients(ticket: Ticket, ctx: Context, author: str) -> list[str]:
    """The assignee, or every agent while nobody is assigned; never the author."""
    agents = [ticket.assignee] if ticket.assignee else [a.email for a in ctx.config.agents]
    return [a for a in agents if a and a != author]


def _alike(ctx: Context, ticket_id: int, event: str) -> list[int] | None:
    """What the incident stage found alike to a new request (maild/pipeline/related.py); None
    (compare by text) for a new request it did not look at. A later notification of the same
    request lists the requester's other open requests only: the text was compared at intake."""
    found = ctx.cache.get(("alike", ticket_id))
    if isinstance(found, list):
        return found
    return None if event == "new" else []


def notify_agents(
    ticket: Ticket,
    ctx: Context,
    event: str,
    author: str,
    text: str,
    warning: str = "",
    known: Sequence[str] = (),
) -> int:
    """One notification per agent, each with a Message-ID signed for that agent."""
    cfg = ctx.config
    mails: list[Outgoing] = []
    for agent in recipients(ticket, ctx, author):
        if mails:  # the same text for every agent: rendered once
            mid = staff_message_id(cfg, ticket.id, agent)
            mails.append(replace(mails[0], to=(agent,), message_id=mid))
            continue
        out = staff_mail(
            ctx,
            ticket,
            agent,
            "notify",
            auto=AUTO_GENERATED,
            event=event,
            author=author,
            text=text,
            warning=warning,
            known=known,
            due=when(ctx, ticket.due_at, cfg.desk.language),
            related=related_lines(ctx.session, ticket, cfg, _alike(ctx, ticket.id, event)),
        )
        mails.append(out)
    queued = enqueue_internal(ctx, mails, ticket_id=ticket.id, kind="notify")
    return len(mails) if queued else 0


class Notify:
    name = "notify"

    def __call__(self, work: Work, ctx: Context) -> Work:
        if work.action not in NOTIFY_ON or work.ticket_id is None or work.parsed is None:
            return work
        ticket = ticket_of(ctx, work.ticket_id)
        assert ticket is not None
        new, conn = work.action == "created", ctx.session.connection()
        if new:
            _acknowledge(ticket, work, ctx)
        warning = ""
        if work.proof.startswith("unproven"):
            warning = (
                f"This message claims to come from agent {work.parsed.from_addr} but "
                "carries no proof; it was treated as a customer message."
            )
        cc_note = left_out_note(work.cc_change, ctx.config.limits.max_cc, ctx.config.desk.language)
        warning = "\n!! ".join(w for w in (warning, cc_note) if w)
        # The sections of what the desk already knows about a new request, assembled here.
        known = []
        if new:
            scored = _articles(ticket, work, ctx)
            words = _words(ticket, work)
            known = similar_lines(conn, ctx.config, ticket.id, words, scored, _stock(ctx))
        notify_agents(
            ticket,
            ctx,
            NOTIFY_ON[work.action],
            work.parsed.from_addr,
            work.parsed.text,
            warning,
            known,
        )
        return work
