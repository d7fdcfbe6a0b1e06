"""Who joins a request from a mail's Cc, at most `[limits] max_cc` per request, and how the
agents hear of the addresses left out (the desk must never become a mailer for strangers)."""

from __future__ import annotations

import logging
from email.utils import getaddresses

from maild.ingest.parse import ParsedMail
from maild.pipeline.base import CcChange, Context
from maild.store.models import Ticket, TicketCc

log = logging.getLogger(__name__)

NAMED = 20  # a notification names this many of the addresses left out, then counts the rest


def _cc_header_count(parsed: ParsedMail) -> int:
    """Distinct addresses in the Cc headers, counting those the parser does not keep."""
    values = [v for k, v in parsed.headers if k.lower() == "cc"]
    return len({a.lower() for _, a in getaddresses(values) if "@" in a})


def add_ccs(ticket: Ticket, parsed: ParsedMail, ctx: Context) -> CcChange:
    """Addresses in the mail's Cc (not the desk's, the requester's or an agent's) join, until
    the request has `[limits] max_cc` CCs; the rest are left out."""
    own = {ctx.config.desk.address, ctx.config.outbound.sender, ticket.requester}
    wanted = [a for a in dict.fromkeys(parsed.cc) if a not in own and not ctx.config.agent(a)]
    if not wanted:
        return CcChange()  # the common case: no need to load the request's CCs at all
    have = {c.email for c in ticket.ccs}
    new = [a for a in wanted if a not in have]
    room = max(0, ctx.config.limits.max_cc - len(have))
    added, left_out = new[:room], tuple(new[room:])
    ticket.ccs.extend(TicketCc(email=a) for a in added)
    if not left_out:
        return CcChange(tuple(added))
    unread = max(0, _cc_header_count(parsed) - len(parsed.cc))  # the parser keeps 100
    count = len(left_out) + unread
    log.warning(
        "request #%d: %d Cc addresses left out (at most %d CCs per request)",
        ticket.id,
        count,
        ctx.config.limits.max_cc,
    )
    return CcChange(tuple(added), left_out, count)


def left_out_note(change: CcChange, limit: int, language: str) -> str:
    """One line for the agents' notification naming the Cc addresses that were not added."""
    if not change.left_out_count:
        return ""
    names = ", ".join(change.left_out[:NAMED])
    more = change.left_out_count - min(len(change.left_out), NAMED)
    if language == "ru":
        tail = f" и ещё {more}" if more else ""
        return (
            f"Не добавлены в копию ({change.left_out_count}; не больше {limit} на запрос): "
            f"{names}{tail}. Добавить: #cc add <адрес>."
        )
    tail = f" and {more} more" if more else ""
    return (
        f"Cc addresses not added ({change.left_out_count}; at most {limit} per request): "
        f"{names}{tail}. Add one with #cc add <email>."
    )
