"""The read-only board: the queue, one request in full, the desk's figures; by magic link.

`/board/login/<token>` (the signed link of a digest) sets a session cookie and sends the
browser on to `/board`, a URL without the token. No passwords, no forms that write: every
route is a GET that reads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from maild.config import Config
from maild.core.clock import Clock
from maild.ops import views
from maild.ops.digest import at_risk, line
from maild.ops.queue import TicketFilter, find_tickets
from maild.ops.stats import desk_stats
from maild.replies.render import Renderer
from maild.security.signing import LINK, LOGIN_PATTERN, SESSION, LinkError, make_token, read_token
from maild.store.db import Database
from maild.store.models import Ticket
from maild.tickets.words import PRIORITIES, STATUSES, TYPES
from maild.web.survey import HEADERS

log = logging.getLogger(__name__)

COOKIE = "maild_board"
PAGE_LIMIT = 500


@dataclass
class BoardSite:
    """What the board needs from the daemon. Not frozen: a reload (SIGHUP) swaps ``config``
    (see ``refresh``), so that agents added since the start get in and removed ones do not."""

    db: Database
    config: Config
    clock: Clock
    renderer: Renderer

    def readers(self) -> set[str]:
        lead = {self.config.desk.lead} if self.config.desk.lead else set()
        return {a.email for a in self.config.agents} | lead


BOARD_KEY = web.AppKey("board", BoardSite)


def _page(site: BoardSite, name: str, status: int = 200, **context: Any) -> web.Response:
    template = site.renderer.env.get_template(f"board/{name}.html.j2")
    body = template.render(desk=site.config.desk, **context)
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=HEADERS
    )


def _who(request: web.Request) -> str | None:
    """The agent of a valid session cookie, or None."""
    site = request.app[BOARD_KEY]
    cookie = request.cookies.get(COOKIE, "")
    try:
        agent, _ = read_token(site.config.secret_key, SESSION, cookie, site.clock())
    except LinkError:
        return None
    return agent if agent in site.readers() else None


async def login(request: web.Request) -> web.Response:
    site = request.app[BOARD_KEY]
    try:
        agent, expires = read_token(
            site.config.secret_key, LINK, request.match_info["token"], site.clock()
        )
    except LinkError as exc:
        log.info("board: %s link", exc.reason)
        return _page(site, "denied", 410 if exc.reason == "expired" else 403, reason=exc.reason)
    if agent not in site.readers():
        return _page(site, "denied", 403, reason="invalid")
    ends = datetime.fromtimestamp(expires, UTC)
    session = make_token(site.config.secret_key, SESSION, agent, ends)
    # A page that moves on by itself rather than a 303: a SameSite=Strict cookie set by a
    # response to a click in a webmail (another site) would not go with the redirect.
    response = _page(site, "enter", target="/board")
    response.set_cookie(
        COOKIE,
        session,
        path="/board",
        httponly=True,
        samesite="Strict",
        secure=site.config.web.base_url.startswith("https://"),
    )
    return response


def _filters(request: web.Request) -> tuple[TicketFilter, bool, dict[str, str]]:
    q = request.query
    shown = {k: q.get(k, "").strip()[:200] for k in ("status", "assignee", "type", "priority", "q")}
    status = shown["status"] if shown["status"] in (*STATUSES, "any") else ""
    wanted = TicketFilter(
        status=status if status not in ("", "any") else None,
        assignee=shown["assignee"] or None,
        search=shown["q"] or None,
        type=shown["type"] if shown["type"] in TYPES else None,
        priority=shown["priority"] if shown["priority"] in PRIORITIES else None,
        open_only=status == "",
        limit=PAGE_LIMIT,
    )
    return wanted, q.get("breaching") == "1", shown


def _queue(site: BoardSite, wanted: TicketFilter, breaching: bool) -> list[Any]:
    now = site.clock()
    with site.db.session() as s:
        rows = find_tickets(s, wanted)
        if breaching:
            rows = [t for t in rows if t.sla_breached_at or at_risk(t, site.config, now)]
        return [line(t, site.config, now) for t in rows]


async def queue(request: web.Request) -> web.Response:
    site = request.app[BOARD_KEY]
    agent = _who(request)
    if agent is None:
        return _page(site, "denied", 401, reason="session")
    wanted, breaching, shown = _filters(request)
    lines = await asyncio.to_thread(_queue, site, wanted, breaching)
    return _page(
        site,
        "queue",
        agent=agent,
        lines=lines,
        shown=shown,
        breaching=breaching,
        agents=sorted(site.readers()),
        limit=PAGE_LIMIT,
        statuses=STATUSES,
        types=TYPES,
        priorities=PRIORITIES,
    )


def _detail(site: BoardSite, number: int) -> dict[str, Any] | None:
    with site.db.session() as s:
        ticket = s.get(Ticket, number)
        return views.ticket_detail(s, ticket) if ticket is not None else None


async def one_request(request: web.Request) -> web.Response:
    site = request.app[BOARD_KEY]
    agent = _who(request)
    if agent is None:
        return _page(site, "denied", 401, reason="session")
    data = await asyncio.to_thread(_detail, site, int(request.match_info["number"]))
    if data is None:
        return _page(site, "denied", 404, reason="missing")
    return _page(site, "request", agent=agent, t=data)


def _stats(site: BoardSite) -> dict[str, Any]:
    with site.db.session() as s:
        return desk_stats(s, site.config.hours, site.clock())


async def stats(request: web.Request) -> web.Response:
    site = request.app[BOARD_KEY]
    agent = _who(request)
    if agent is None:
        return _page(site, "denied", 401, reason="session")
    return _page(site, "stats", agent=agent, data=await asyncio.to_thread(_stats, site))


def refresh(app: web.Application, config: Config) -> None:
    """Let the board of a running app read ``config`` from now on."""
    site = app.get(BOARD_KEY)
    if site is not None:
        site.config = config


def add_board_routes(app: web.Application, site: BoardSite) -> None:
    app[BOARD_KEY] = site
    app.router.add_get(LOGIN_PATTERN, login)
    app.router.add_get("/board", queue)
    app.router.add_get(r"/board/request/{number:\d{1,12}}", one_request)
    app.router.add_get("/board/stats", stats)
