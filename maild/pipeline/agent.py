"""An agent's reply: commands, internal notes, the answer relayed to the customer, escalation."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from maild.config.sections import Department
from maild.knowledge.articles import kb_errors, record_article
from maild.pipeline import incident_commands
from maild.pipeline.base import Context, Work
from maild.pipeline.incident import answer_targets
from maild.pipeline.records import set_due, store_message
from maild.replies import breaker, escalation
from maild.replies.compose import AUTO_REPLIED
from maild.replies.kinds import customer_mail, staff_mail
from maild.replies.outbox import enqueue
from maild.replies.quotes import strip_quoted
from maild.store.events import add_event
from maild.store.models import Ticket, TicketCc
from maild.tickets.command_words import help_text, problem
from maild.tickets.commands import Command, ParsedCommands, parse_commands, parse_due
from maild.tickets.status import change_status
from maild.tickets.words import Action, Status

log = logging.getLogger(__name__)


def department_in(ctx: Context, arg: str) -> tuple[Department | None, str]:
    """``#escalate`` names a department by its short name or its title (which may have spaces);
    returns it and the text for the department that follows."""
    low = arg.lower()
    best: tuple[Department | None, str] = (None, arg.partition(" ")[2])
    size = 0
    for dept in ctx.config.departments:
        for key in (dept.name, dept.title):
            k = key.lower()
            if k and len(k) > size and (low == k or low.startswith(k + " ")):
                best, size = (dept, arg[len(k) :].strip()), len(k)
    return best


def validate(cmds: ParsedCommands, ctx: Context) -> list[str]:
    """Errors that depend on the desk's configuration (agents, departments)."""
    errors, lang = list(cmds.errors), ctx.config.desk.language
    assign = cmds.get("assign")
    if assign and assign.arg.lower() != "me" and ctx.config.agent(assign.arg) is None:
        errors.append(problem(lang, "not-agent", arg=assign.arg))
    esc = cmds.get("escalate")
    if esc and department_in(ctx, esc.arg)[0] is None:
        names = ", ".join(
            f"{d.name} ({d.title})" if d.title else d.name for d in ctx.config.departments
        )
        errors.append(
            problem(lang, "unknown-department", arg=esc.arg.split()[0], names=names or "-")
        )
    status = cmds.get("status")
    if esc and status and status.arg != "hold":
        errors.append(problem(lang, "escalate-status"))
    if (
        cmds.get("note")
        and len(cmds.commands) > 1
        and any(c.name in ("escalate",) for c in cmds.commands)
    ):
        errors.append(problem(lang, "note-escalate"))
    return errors + kb_errors(cmds, ctx.session, lang)


def _command_error(ticket: Ticket, ctx: Context, agent: str, errors: list[str]) -> None:
    hint = help_text(ctx.config.desk.language)
    out = staff_mail(
        ctx, ticket, agent, "command_error", auto=AUTO_REPLIED, errors=errors, help=hint
    )
    enqueue(ctx, out, ticket_id=ticket.id, kind="command-error")


def _execute(ticket: Ticket, cmds: ParsedCommands, ctx: Context, agent: str) -> Department | None:
    """Apply every command (already validated); returns the department escalated to."""
    now, s = ctx.clock(), ctx.session
    dept = None
    for cmd in cmds.commands:
        if cmd.name in ("priority", "type"):
            add_event(
                s,
                ticket.id,
                ctx.clock(),
                cmd.name,
                agent,
                old=getattr(ticket, cmd.name),
                new=cmd.arg,
            )
            setattr(ticket, cmd.name, cmd.arg)
            if ticket.first_response_at is None:
                set_due(ticket, ctx.config)
        elif cmd.name == "status":
            changed = change_status(ticket, Status(cmd.arg), now, ctx.config.clock)
            if changed:
                add_event(
                    s, ticket.id, ctx.clock(), "status", agent, old=changed[0], new=changed[1]
                )
        elif cmd.name == "assign":
            who = agent if cmd.arg.lower() == "me" else cmd.arg.lower()
            add_event(s, ticket.id, ctx.clock(), "assign", agent, old=ticket.assignee, new=who)
            ticket.assignee = who
        elif cmd.name == "category":
            add_event(s, ticket.id, ctx.clock(), "category", agent, new=cmd.arg[:128])
            ticket.category = cmd.arg[:128]
            if ticket.first_response_at is None:  # suggestion, registration: a clock of its own
                set_due(ticket, ctx.config)
        elif cmd.name == "cc":
            _cc(ticket, cmd.arg, ctx, agent)
        elif cmd.name == "escalate":
            dept = department_in(ctx, cmd.arg)[0]
        elif cmd.name in incident_commands.COMMANDS:
            incident_commands.execute(ticket, cmd, ctx, agent)
    due = cmds.get("due")
    if due is not None:  # after #type/#priority, which would recompute the default deadline
        _set_due(ticket, due.arg, ctx, agent)
    ticket.updated_at = now
    return dept


def _set_due(ticket: Ticket, arg: str, ctx: Context, agent: str) -> None:
    parsed = parse_due(arg)
    assert parsed is not None  # validated before anything ran
    day, clock = parsed
    hours = ctx.config.hours
    local = datetime.combine(day, clock or hours.end, hours.zone)
    ticket.due_at = local.astimezone(UTC)
    ticket.sla_warned_at = ticket.sla_breached_at = None
    add_event(ctx.session, ticket.id, ctx.clock(), "due", agent, due=ticket.due_at.isoformat())


def _cc(ticket: Ticket, arg: str, ctx: Context, agent: str) -> None:
    action, _, email = arg.partition(" ")
    email = email.strip().lower()
    have = {c.email: c for c in ticket.ccs}
    if action.lower() == "add" and email not in have and email != ticket.requester:
        ticket.ccs.append(TicketCc(email=email))
    elif action.lower() == "remove" and email in have:
        ticket.ccs.remove(have[email])
    add_event(ctx.session, ticket.id, ctx.clock(), f"cc-{action.lower()}", agent, email=email)


def agent_name(ctx: Context, email: str) -> str:
    agent = ctx.config.agent(email)
    return agent.name if agent else email


def _relay(ticket: Ticket, work: Work, ctx: Context, agent: str, text: str, solved: bool) -> None:
    """Send the agent's new text (and attachments) to the requester and the CCs."""
    parsed = work.parsed
    assert parsed is not None
    name = agent_name(ctx, agent)
    atts = tuple((a.filename, a.content_type, a.data) for a in parsed.attachments)
    out = customer_mail(
        ctx,
        ticket,
        "resolution" if solved else "",
        prefix=text,
        auto=None,
        sender_name=f"{name} ({ctx.config.desk.name})",
        attachments=atts,
        quote=True,
    )
    enqueue(
        ctx,
        out,
        ticket_id=ticket.id,
        kind="agent-reply",
        message_kind="agent",
        automatic=False,
    )


def handle_agent(work: Work, ctx: Context, ticket: Ticket) -> Work:
    parsed = work.parsed
    assert parsed is not None
    agent, now = parsed.from_addr, ctx.clock()
    breaker.release(ctx, ticket, agent)  # a person acted: the request's mail may flow again
    cmds = parse_commands(parsed.text, ctx.config.desk.language)
    errors = validate(cmds, ctx) + incident_commands.errors(cmds, ctx, ticket)
    note = cmds.get("note") is not None
    msg_id = store_message(work, ctx, ticket.id, "note" if note and not errors else "agent")
    if errors:
        add_event(
            ctx.session,
            ticket.id,
            ctx.clock(),
            "command-error",
            agent,
            errors=errors,
            message=msg_id,
        )
        _command_error(ticket, ctx, agent, errors)
        log.info(
            "inbound %d: agent %s on #%d: command error: %s",
            work.inbound_id,
            agent,
            ticket.id,
            "; ".join(errors),
        )
        return replace(work, ticket_id=ticket.id, action=Action.AGENT_ERROR)
    dept = _execute(ticket, cmds, ctx, agent)
    if cmds.get("kb") is not None:  # the answer becomes (or updates) an article
        record_article(ctx, ticket, cmds, agent)
    solved_now = (cmds.get("status") or Command("")).arg == "solved"
    text = "" if note else strip_quoted(cmds.body).strip()
    if note:
        add_event(ctx.session, ticket.id, ctx.clock(), "note", agent, message=msg_id)
    elif dept is not None:
        note_text = department_in(ctx, (cmds.get("escalate") or Command("")).arg)[1]
        escalation.escalate(ticket, ctx, agent_name(ctx, agent), dept, note_text, text)
        add_event(
            ctx.session,
            ticket.id,
            ctx.clock(),
            "escalated",
            agent,
            department=dept.name,
            message=msg_id,
        )
    elif text or solved_now:
        for target in answer_targets(ctx, ticket, agent, solved_now):  # a problem: everyone
            _relay(target, work, ctx, agent, text, solved_now)
        add_event(ctx.session, ticket.id, ctx.clock(), "agent-reply", agent, message=msg_id)
    if not note and (text or dept) and ticket.first_response_at is None:
        ticket.first_response_at = now
        ticket.assignee = ticket.assignee or agent
        if ticket.status == "new" and cmds.get("status") is None:
            change_status(ticket, Status.OPEN, now, ctx.config.clock)
    log.info(
        "inbound %d: agent %s on #%d (%s)",
        work.inbound_id,
        agent,
        ticket.id,
        ", ".join(f"#{c.name} {c.arg}".strip() for c in cmds.commands) or "reply",
    )
    return replace(work, ticket_id=ticket.id, action=Action.AGENT)
