"""The public knowledge base, read-only: ``GET /kb`` (list, ``?q=`` search) and ``GET /kb/N``.

Internal articles are never served (they live in agent mail only). The pages carry the
survey pages' headers and are rendered by autoescaped templates, in ru or en.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import select

from maild.knowledge.search import Hit, public_articles
from maild.replies.customer import paragraphs
from maild.replies.render import local_time
from maild.store.models import KbArticle
from maild.web.survey import SITE_KEY, SurveySite, _page

log = logging.getLogger(__name__)

QUERY_MAX = 200
LIST_MAX = 200


@dataclass(frozen=True)
class Shown:
    """An article as a page shows it."""

    number: int
    title: str
    updated: str
    snippet: str = ""


def _language(site: SurveySite, request: web.Request) -> str:
    asked = request.query.get("lang", "")
    if asked in ("en", "ru"):
        return asked
    accept = request.headers.get("Accept-Language", "").lower()
    if accept:
        return "ru" if accept.lstrip().startswith("ru") else "en"
    return site.config.desk.language


def _list(site: SurveySite, query: str, language: str) -> list[Shown]:
    zone = site.config.desk.timezone
    with site.db.session() as s:
        if query:
            hits: list[Hit] = public_articles(s.connection(), query)
            when = {
                a.id: a.updated_at
                for a in s.scalars(
                    select(KbArticle).where(KbArticle.id.in_([h.number for h in hits]))
                )
            }
            return [
                Shown(h.number, h.title, local_time(when[h.number], zone, language), h.snippet)
                for h in hits
                if h.number in when
            ]
        stmt = select(KbArticle).where(KbArticle.internal.is_(False))
        rows = s.scalars(stmt.order_by(KbArticle.updated_at.desc()).limit(LIST_MAX))
        return [Shown(a.id, a.title, local_time(a.updated_at, zone, language)) for a in rows]


async def kb_list(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    language = _language(site, request)
    query = request.query.get("q", "").strip()[:QUERY_MAX]
    found = await asyncio.to_thread(_list, site, query, language)
    return _page(site, language, "kb_list", 200, articles=found, query=query)


def _one(site: SurveySite, number: int, language: str) -> tuple[Shown, str] | None:
    with site.db.session() as s:
        article = s.get(KbArticle, number)
        if article is None or article.internal:
            return None
        when = local_time(article.updated_at, site.config.desk.timezone, language)
        return Shown(article.id, article.title, when), article.body


async def kb_article(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    language = _language(site, request)
    found = await asyncio.to_thread(_one, site, int(request.match_info["n"]), language)
    if found is None:  # unknown, or internal: the same answer
        return _page(site, language, "kb_article", 404, article=None, body="")
    shown, body = found
    return _page(site, language, "kb_article", 200, article=shown, body=paragraphs(body))


def add_kb_routes(app: web.Application) -> None:
    """After the survey routes (which hold the site); GET only."""
    app.router.add_get("/kb", kb_list)
    app.router.add_get(r"/kb/{n:\d{1,12}}", kb_article)
