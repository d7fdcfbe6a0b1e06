"""`#list [mine|unassigned|breaching|all]` and `#search words` from a proven agent: the list
comes back by mail. Anyone else's `#list` is an ordinary message (see the "identify" stage)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

from maild.ops.digest import LIST_LIMIT, line
from maild.ops.digest import queue as open_queue
from maild.ops.queue import TicketFilter, find_tickets
from maild.pipeline.base import Context, Work
from maild.pipeline.records import store_message
from maild.replies.kinds import staff_message_id
from maild.replies.outbox import enqueue
from maild.scheduler.digest import SUBJECTS, desk_mail
from maild.tickets.words import Action

log = logging.getLogger(__name__)

LISTS = ("mine", "unassigned", "breaching", "all")
_QUERY = re.compile(r"^#(list|search)\b[ \t]*(.*?)\s*$", re.IGNORECASE)
TITLES = {
    "en": {
        "mine": "Your open requests",
        "unassigned": "Unassigned requests",
        "breaching": "Requests breaching or at risk",
        "all": "All open requests",
        "search": "Requests matching “{words}”",
        "unknown": "No list called “{words}”; ask for mine, unassigned, breaching or all",
        "help": "This address answers questions, one on the first line",
    },
    "ru": {
        "mine": "Ваши открытые запросы",
        "unassigned": "Запросы без исполнителя",
        "breaching": "Запросы с нарушенным или близким сроком",
        "all": "Все открытые запросы",
        "search": "Запросы по словам «{words}»",
        "unknown": "Списка «{words}» нет; есть mine, unassigned, breaching, all",
        "help": "Сюда можно задать вопрос в первой строке письма",
    },
}


@dataclass(frozen=True)
class Query:
    kind: str  # a name from LISTS, "search", "unknown" or "help"
    words: str = ""


def parse_query(text: str, work: Work | None = None) -> Query | None:
    """The query on the first non-blank line of an agent's mail, or None.

    A reply to a digest or a list (signed for no request: ``proven_ticket`` 0) without a
    query is answered with how to ask, rather than opening a request from the agent.
    """
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    m = _QUERY.match(first.strip())
    if m is None:
        return Query("help") if work is not None and work.proven_ticket == 0 else None
    command, arg = m.group(1).lower(), m.group(2)
    if command == "search":
        return Query("search", arg) if arg else Query("unknown", "#search")
    which = (arg or "mine").lower()
    return Query(which) if which in LISTS else Query("unknown", arg)


def answer_query(work: Work, ctx: Context, query: Query) -> Work:
    """Queue the list for the agent; their mail is kept, attached to no request."""
    parsed = work.parsed
    assert parsed is not None
    cfg, s, now = ctx.config, ctx.session, ctx.clock()
    agent, lang = parsed.from_addr, cfg.desk.language
    if query.kind == "search":
        found = find_tickets(s, TicketFilter(search=query.words, limit=LIST_LIMIT))
        lines = [line(t, cfg, now) for t in reversed(found)]
    elif query.kind in ("unknown", "help"):
        lines = []
    else:
        lines = open_queue(s, query.kind, agent, cfg, now)
    title = TITLES[lang][query.kind].format(words=query.words)
    text = ctx.renderer.render(
        lang,
        "query",
        desk=cfg.desk,
        title=title,
        lines=lines,
        limit=LIST_LIMIT,
        listed=query.kind not in ("unknown", "help"),
    )[0]
    mid = staff_message_id(cfg, 0, agent)
    subject = SUBJECTS["query"][lang].format(what=query.words or query.kind)
    out = replace(
        desk_mail(cfg, agent, subject, mid, text, now),
        in_reply_to=parsed.message_id,
        references=(parsed.message_id,) if parsed.message_id else (),
    )
    store_message(work, ctx, None, "agent")
    enqueue(ctx, out, ticket_id=None, kind="agent-query", automatic=False)
    asked = f"{query.kind} {query.words}".strip()
    log.info("inbound %d: agent %s asked %s: %d line(s)", work.inbound_id, agent, asked, len(lines))
    return replace(work, action=Action.AGENT_QUERY)
