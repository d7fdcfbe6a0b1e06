"""The customer's read-only request page, ``GET /r/<number>/<token>``, and its attachments.

The token (HMAC over the request and an expiry) is only ever mailed to the request's requester
and CCs. The page shows the public conversation: the customer's mail and what agents sent
them, never internal notes, department mail or command errors. A GET changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.config import Config
from maild.replies.quotes import strip_quoted
from maild.replies.render import local_time, when_text
from maild.security.signing import PAGE_PATTERN, LinkError, verify_page
from maild.store.models import Attachment, Blob, Event, Message, Ticket
from maild.tickets.commands import parse_commands
from maild.tickets.delay import promised_time
from maild.web.survey import HEADERS, SITE_KEY, SurveySite, _error, _page

log = logging.getLogger(__name__)

# Agent mail the customer received: the relayed reply, or the words of an escalation.
_PUBLIC_EVENTS = ("agent-reply", "escalated")


@dataclass(frozen=True)
class Entry:
    """One message of the public conversation."""

    mine: bool  # written by the customer
    author: str
    at: str
    text: str
    attachments: tuple[tuple[int, str, int], ...]  # (id, file name, size)
    department: str = ""


@dataclass(frozen=True)
class View:
    """The request as its page shows it."""

    ticket: Ticket
    promise: str
    entries: tuple[Entry, ...]


def _relayed(s: Session, ticket_id: int) -> dict[int, str]:
    """Agent messages that reached the customer -> the department they brought in, if any."""
    events = s.scalars(
        select(Event).where(Event.ticket_id == ticket_id, Event.kind.in_(_PUBLIC_EVENTS))
    )
    found: dict[int, str] = {}
    for event in events:
        detail = json.loads(event.detail or "{}")
        if isinstance(detail.get("message"), int):
            found[detail["message"]] = str(detail.get("department") or "")
    return found


def _entry(m: Message, config: Config, language: str, department: str) -> Entry:
    mine = m.kind == "customer"
    text = m.text if mine else parse_commands(m.text).body
    agent = config.agent(m.from_addr)
    author = (m.from_name or m.from_addr) if mine else (agent.name if agent else config.desk.name)
    dept = config.department(department) if department else None
    return Entry(
        mine,
        author,
        local_time(m.created_at, config.desk.timezone, language),
        strip_quoted(text).strip(),
        tuple((a.id, a.filename, a.size) for a in m.attachments),
        dept.human if dept else department,
    )


def load_view(s: Session, config: Config, ticket_id: int, now: datetime) -> View | None:
    ticket = s.get(Ticket, ticket_id)
    if ticket is None:
        return None
    relayed = _relayed(s, ticket_id)
    stmt = (
        select(Message)
        .where(Message.ticket_id == ticket_id, Message.direction == "in")
        .order_by(Message.id)
    )
    entries = [
        _entry(m, config, ticket.language, relayed.get(m.id, ""))
        for m in s.scalars(stmt)
        if m.kind == "customer" or (m.kind == "agent" and m.id in relayed)
    ]
    promise = ""
    if ticket.first_response_at is None and ticket.status not in ("solved", "closed"):
        due = promised_time(ticket, config)
        if due is not None:
            promise = when_text(due, now, ticket.language, config.desk.timezone)
    s.expunge(ticket)
    return View(ticket, promise, tuple(entries))


def _attachment(s: Session, ticket_id: int, attachment_id: int) -> tuple[Attachment, bytes] | None:
    """An attachment of a public message of ``ticket_id`` (never of a note or a department's)."""
    att = s.get(Attachment, attachment_id)
    if att is None or att.message.ticket_id != ticket_id or att.message.direction != "in":
        return None
    if att.message.kind != "customer" and att.message.id not in _relayed(s, ticket_id):
        return None
    blob = s.get(Blob, att.sha256)
    return (att, blob.data) if blob is not None else None


def _verified(site: SurveySite, request: web.Request) -> int:
    m = request.match_info
    return verify_page(site.config.secret_key, m["ticket"], m["token"], site.clock())


async def request_page(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    try:
        number = _verified(site, request)
    except LinkError as exc:
        return _error(site, exc.reason)

    def read() -> View | None:
        with site.db.session() as s:
            return load_view(s, site.config, number, site.clock())

    view = await asyncio.to_thread(read)
    if view is None:
        return _error(site, "missing")
    lang = view.ticket.language
    return _page(site, lang, "request", 200, view=view, base=request.path)


async def attachment(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    try:
        number = _verified(site, request)
    except LinkError as exc:
        return _error(site, exc.reason)
    wanted = request.match_info["att"]

    def read() -> tuple[Attachment, bytes] | None:
        with site.db.session() as s:
            return _attachment(s, number, int(wanted))

    found = await asyncio.to_thread(read)
    if found is None:
        return _error(site, "missing")
    att, data = found
    ascii_name = "".join(c for c in att.filename if c.isascii() and (c.isalnum() or c in "._- "))
    headers = {
        **HEADERS,
        "Content-Disposition": f'attachment; filename="{ascii_name or "attachment"}"; '
        f"filename*=UTF-8''{quote(att.filename, safe='')}",
        "Content-Type": "application/octet-stream",
    }
    return web.Response(body=data, headers=headers)


def add_page_routes(app: web.Application) -> None:
    """After the survey routes (which hold the site); GET only: the page changes nothing."""
    app.router.add_get(PAGE_PATTERN, request_page)
    app.router.add_get(PAGE_PATTERN + r"/a/{att:\d{1,12}}", attachment)
