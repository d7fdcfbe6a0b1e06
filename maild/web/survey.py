"""The Good/Bad survey pages: GET shows a confirm form and records nothing; POST records."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import Clock, as_utc
from maild.replies.render import Renderer
from maild.replies.scheduled import Notices, staff_for
from maild.security.signing import PATH_PATTERN, LinkError, RatingLink, verify
from maild.store.db import Database
from maild.store.events import add_event
from maild.store.models import Event, Ticket

log = logging.getLogger(__name__)

COMMENT_MAX = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# The URL is the capability: never cache it, never leak it in a Referer, never frame the page.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
STATUS = {"invalid": 403, "expired": 410, "closed": 410, "missing": 404}


@dataclass(frozen=True)
class SurveySite:
    """What the survey pages need from the daemon."""

    db: Database
    config: Config
    clock: Clock
    renderer: Renderer
    on_outbox: Callable[[], None] | None = None


SITE_KEY = web.AppKey("survey", SurveySite)


@dataclass(frozen=True)
class Shown:
    """The request as the page shows it (read outside any transaction)."""

    language: str
    subject: str
    status: str
    rating: str | None


def clean_comment(value: str) -> str:
    """At most COMMENT_MAX characters of text, without control characters but line breaks."""
    return _CONTROL.sub("", value.replace("\r\n", "\n"))[:COMMENT_MAX].strip()


def _page(site: SurveySite, language: str, name: str, status: int, **context: Any) -> web.Response:
    template = site.renderer.env.get_template(f"{language}/{name}.html.j2")
    body = template.render(desk=site.config.desk, comment_max=COMMENT_MAX, **context)
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=HEADERS
    )


def _error(site: SurveySite, reason: str, language: str | None = None) -> web.Response:
    lang = language or site.config.desk.language
    return _page(site, lang, "link_error", STATUS[reason], reason=reason)


def _check(site: SurveySite, request: web.Request) -> RatingLink:
    m = request.match_info
    now = site.clock()
    return verify(site.config.secret_key, m["ticket"], m["rating"], m["expires"], m["sig"], now)


def _load(db: Database, ticket_id: int) -> Shown | None:
    with db.session() as s:
        t = s.get(Ticket, ticket_id)
        return Shown(t.language, t.subject, t.status, t.rating) if t is not None else None


async def rate_page(request: web.Request) -> web.Response:
    """GET: one page with the chosen rating and a confirm button. Records nothing at all:
    mail scanners open every link they see."""
    site = request.app[SITE_KEY]
    try:
        link = _check(site, request)
    except LinkError as exc:
        return _error(site, exc.reason)
    shown = await asyncio.to_thread(_load, site.db, link.ticket_id)
    if shown is None:
        return _error(site, "missing")
    if shown.status != "solved":  # closed, or re-opened since the survey went out
        return _error(site, "closed", shown.language)
    return _page(
        site,
        shown.language,
        "rate",
        200,
        ticket_id=link.ticket_id,
        subject=shown.subject,
        rating=link.rating,
        previous=shown.rating,
    )


async def rate_submit(request: web.Request) -> web.Response:
    """POST: record the rating (the last one wins until the request is closed)."""
    site = request.app[SITE_KEY]
    try:
        link = _check(site, request)
    except LinkError as exc:
        return _error(site, exc.reason)
    form = await request.post()
    raw = form.get("comment", "")
    comment = clean_comment(raw if isinstance(raw, str) else "")
    outcome, language = await asyncio.to_thread(record_rating, site, link, comment)
    if outcome != "recorded":
        return _error(site, outcome, language)
    if link.rating == "bad" and site.on_outbox is not None:
        site.on_outbox()
    return _page(site, language or site.config.desk.language, "thanks", 200, rating=link.rating)


def _lock(site: SurveySite, s: Session, ticket_id: int) -> Ticket | None:
    stmt = select(Ticket).where(Ticket.id == ticket_id)
    return s.scalar(stmt if site.db.is_sqlite else stmt.with_for_update())


def record_rating(site: SurveySite, link: RatingLink, comment: str) -> tuple[str, str | None]:
    """("recorded" | "closed" | "missing", the request's language), in one transaction."""
    now = site.clock()
    with site.db.write() as s:
        t = _lock(site, s, link.ticket_id)
        if t is None:
            return "missing", None
        if t.status != "solved":  # closed, or re-opened: this survey is over
            return "closed", t.language
        earlier = t.rated_at is not None and not (
            t.solved_at is not None and as_utc(t.rated_at) < as_utc(t.solved_at)
        )
        # One mail to the team per solve cycle when it turns Bad, however often the form is sent.
        changed = link.rating == "bad" and not (earlier and t.rating == "bad")
        t.rating, t.rating_comment, t.rated_at = link.rating, comment or None, now
        t.updated_at = now
        _rated_event(s, t, now, comment, again=earlier)
        if changed:
            _notify_bad(site, s, t, comment, now)
        log.info("request #%d rated %s", t.id, link.rating)
        return "recorded", t.language


def _rated_event(s: Session, t: Ticket, now: datetime, comment: str, *, again: bool) -> None:
    """One `rated` event per solve cycle: the first POST adds it, a later one updates it."""
    if again:
        stmt = select(Event).where(Event.ticket_id == t.id, Event.kind == "rated")
        event = s.scalars(stmt.order_by(Event.id.desc()).limit(1)).first()
        if event is not None:
            updates = int(json.loads(event.detail or "{}").get("updates", 0)) + 1
            detail = {"rating": t.rating, "comment": comment, "updates": updates}
            event.at, event.detail = now, json.dumps(detail, ensure_ascii=False)
            return
    add_event(s, t.id, now, "rated", t.requester, rating=t.rating, comment=comment)


def _notify_bad(site: SurveySite, s: Session, t: Ticket, comment: str, now: datetime) -> None:
    notices = Notices(site.config, site.renderer, now)
    notices.to_staff(s, t, staff_for(t, site.config), "bad_rating", comment=comment)


def add_routes(app: web.Application, site: SurveySite) -> None:
    app[SITE_KEY] = site
    app.router.add_get(PATH_PATTERN, rate_page)
    app.router.add_post(PATH_PATTERN, rate_submit)
