"""Articles from agents' answers: ``#kb`` creates one, ``#kb N`` updates N keeping history,
``#kb`` with ``#note`` makes it internal (agents only)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.knowledge.index import index_article
from maild.replies.context import MailContext
from maild.replies.quotes import strip_quoted
from maild.store.events import add_event
from maild.store.models import KbArticle, KbArticleVersion, Ticket
from maild.tickets.commands import ParsedCommands

log = logging.getLogger(__name__)

TITLE_MAX = 200
_PROBLEMS = {
    "missing": {
        "en": "#kb {arg}: there is no article {arg}",
        "ru": "#kb {arg}: статьи {arg} нет",
    },
    "empty": {
        "en": "#kb: the reply has no text for the article",
        "ru": "#kb: в ответе нет текста для статьи",
    },
}


def article_text(cmds: ParsedCommands) -> str:
    """What becomes the article: the agent's words without commands, quotes or signature."""
    return strip_quoted(cmds.body).strip()


def kb_errors(cmds: ParsedCommands, session: Session, language: str) -> list[str]:
    """Problems with a ``#kb`` line that the desk's data decides (an unknown article)."""
    kb = cmds.get("kb")
    if kb is None:
        return []
    lang = language if language in ("en", "ru") else "en"
    if kb.arg.isdigit() and session.get(KbArticle, int(kb.arg)) is None:
        return [_PROBLEMS["missing"][lang].format(arg=kb.arg)]
    if not article_text(cmds):
        return [_PROBLEMS["empty"][lang]]
    return []


def _version(session: Session, article: KbArticle, ticket_id: int, now: datetime) -> None:
    session.add(
        KbArticleVersion(
            article_id=article.id,
            version=article.version,
            title=article.title,
            body=article.body,
            ticket_id=ticket_id,
            author=article.author,
            created_at=now,
        )
    )


def record_article(ctx: MailContext, ticket: Ticket, cmds: ParsedCommands, agent: str) -> int:
    """Create or update the article the reply's ``#kb`` line asks for; returns its number."""
    kb, s, now = cmds.get("kb"), ctx.session, ctx.clock()
    assert kb is not None
    body = article_text(cmds)
    article = s.get(KbArticle, int(kb.arg)) if kb.arg.isdigit() else None
    new = article is None
    if article is None:
        article = KbArticle(
            title=(kb.arg or ticket.subject).strip()[:TITLE_MAX] or f"#{ticket.id}",
            body=body,
            internal=cmds.get("note") is not None,
            ticket_id=ticket.id,
            author=agent,
            version=1,
            created_at=now,
            updated_at=now,
        )
        s.add(article)
    else:
        article.body, article.author, article.updated_at = body, agent, now
        article.version += 1
    s.flush()
    _version(s, article, ticket.id, now)
    index_article(s.connection(), article.id, article.title, article.body, new=new)
    add_event(
        s, ticket.id, ctx.clock(), "kb-article", agent, article=article.id, version=article.version
    )
    log.info("request #%d: article %d version %d", ticket.id, article.id, article.version)
    return article.id


def versions(session: Session, article_id: int) -> list[KbArticleVersion]:
    stmt = select(KbArticleVersion).where(KbArticleVersion.article_id == article_id)
    return list(session.scalars(stmt.order_by(KbArticleVersion.version)))
