"""Agent commands about problems: `#link N`, `#unlink`, `#problem`, `#merge N`.

`#link N`: this request becomes an incident of problem N (N becomes a problem if it was not).
`#unlink`: it is an incident no more. `#problem`: make this request a problem by hand.
`#merge N`: this request is merged into N: its messages are shown on N, its requester becomes
a CC of N, it is closed, and the customer is told which number continues.
"""

from __future__ import annotations

import logging

from maild.pipeline.base import Context
from maild.pipeline.incident import make_incident
from maild.pipeline.records import ticket_of
from maild.replies.compose import AUTO_GENERATED
from maild.replies.kinds import customer_mail
from maild.replies.outbox import enqueue
from maild.store.events import add_event
from maild.store.models import Ticket, TicketCc
from maild.tickets.commands import Command, ParsedCommands
from maild.tickets.incidents import COMMANDS, NUMBER, word
from maild.tickets.status import change_status
from maild.tickets.words import Status

log = logging.getLogger(__name__)

__all__ = ["COMMANDS", "errors", "execute"]


def number(arg: str) -> int:
    found = NUMBER.match(arg)
    assert found is not None  # checked by syntax_error
    return int(found.group(1))


def errors(cmds: ParsedCommands, ctx: Context, ticket: Ticket) -> list[str]:
    """What the commands would do wrong with the requests as they are now."""
    lang, found = ctx.config.desk.language, []
    for cmd in cmds.commands:
        if cmd.name in ("link", "merge"):
            problem = _target_error(cmd, ctx, ticket, lang)
            if problem:
                found.append(problem)
        elif cmd.name == "unlink" and ticket.problem_id is None:
            found.append(word(lang, "not-linked"))
    return found


def _target_error(cmd: Command, ctx: Context, ticket: Ticket, lang: str) -> str | None:
    if not NUMBER.match(cmd.arg):
        return None  # already reported by the parser
    n = number(cmd.arg)
    target = ticket_of(ctx, n)
    if target is None:
        return word(lang, "missing", name=cmd.name, arg=cmd.arg)
    if n == ticket.id:
        return word(lang, "itself", name=cmd.name, arg=cmd.arg)
    if target.status == "closed" or target.merged_into is not None:
        return word(lang, "finished", name=cmd.name, arg=cmd.arg)
    if cmd.name == "link" and target.problem_id is not None:
        return word(lang, "is-incident", arg=cmd.arg, problem=target.problem_id)
    return None


def execute(ticket: Ticket, cmd: Command, ctx: Context, agent: str) -> None:
    """Apply one (validated) command."""
    s = ctx.session
    if cmd.name == "link":
        problem = ticket_of(ctx, number(cmd.arg))
        assert problem is not None
        if problem.type != "problem":
            add_event(s, problem.id, ctx.clock(), "type", agent, old=problem.type, new="problem")
            problem.type = "problem"
        make_incident(ctx, ticket, problem, agent)
    elif cmd.name == "unlink":
        add_event(s, ticket.id, ctx.clock(), "unlinked", agent, problem=ticket.problem_id)
        ticket.problem_id, ticket.type = None, "question"
    elif cmd.name == "problem":
        add_event(s, ticket.id, ctx.clock(), "type", agent, old=ticket.type, new="problem")
        ticket.type, ticket.problem_id = "problem", None
    elif cmd.name == "merge":
        merge(ticket, number(cmd.arg), ctx, agent)


def merge(ticket: Ticket, into: int, ctx: Context, agent: str) -> None:
    """``ticket`` continues as request ``into``: closed, its requester a CC there, told so."""
    target = ticket_of(ctx, into)
    assert target is not None
    have = {c.email for c in target.ccs}
    for email in (ticket.requester, *(c.email for c in ticket.ccs)):
        if email != target.requester and email not in have:
            target.ccs.append(TicketCc(email=email))
            have.add(email)
    ticket.merged_into = into
    change_status(ticket, Status.CLOSED, ctx.clock(), ctx.config.clock)
    add_event(ctx.session, ticket.id, ctx.clock(), "merged", agent, into=into)
    add_event(ctx.session, into, ctx.clock(), "merged-here", agent, ticket=ticket.id)
    out = customer_mail(
        ctx, ticket, "merged", auto=AUTO_GENERATED, name=ticket.requester_name, into=target
    )
    enqueue(ctx, out, ticket_id=ticket.id, kind="merged")
    log.info("request #%d merged into #%d by %s", ticket.id, into, agent)
