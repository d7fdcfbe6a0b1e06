"""Similar solved requests and matching articles: for the agents' notification of a new
request (``[kb] similar_threshold``) and the customer's acknowledgement (``suggest_threshold``).

The store's full-text search finds candidates (any of the new request's meaningful words);
the score is the share of meaningful stems the two texts have in common (0..1), the same
on both stores.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Table, select

from maild.config import Config
from maild.knowledge.index import searchable
from maild.knowledge.search import ANY_TERMS, article_hits, message_hits
from maild.knowledge.text import query_terms, similarity
from maild.store.direct import Statement
from maild.store.models import KbArticle, Message, Ticket

log = logging.getLogger(__name__)

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_TICKETS: Table = Ticket.__table__  # type: ignore[assignment]
_ARTICLES: Table = KbArticle.__table__  # type: ignore[assignment]
ANSWER_LINES = 3
CANDIDATES = 40  # best full-text matches among solved requests
SCORED = 10  # requests among them scored by shared words


@dataclass(frozen=True)
class Similar:
    """A solved request like the new one, with the first lines of the answer that solved it."""

    number: int
    subject: str
    score: float
    answer: tuple[str, ...]


@dataclass(frozen=True)
class Article:
    number: int
    title: str
    score: float
    internal: bool
    url: str


def _questions(conn: Connection, numbers: list[int]) -> dict[int, str]:
    """Each request's subject and first customer message."""
    m, t = _MESSAGES.c, _TICKETS.c
    found: dict[int, str] = {}
    rows = conn.execute(
        select(m.ticket_id, t.subject, m.text)
        .join(_TICKETS, t.id == m.ticket_id)
        .where(m.ticket_id.in_(numbers), m.kind == "customer")
        .order_by(m.id)
    )
    for number, subject, text in rows:
        found.setdefault(number, f"{subject}\n{text}")
    return found


def _answer(conn: Connection, number: int) -> tuple[str, ...]:
    m = _MESSAGES.c
    text = conn.execute(
        select(m.text)
        .where(m.ticket_id == number, m.kind == "agent")
        .order_by(m.id.desc())
        .limit(1)
    ).scalar()
    lines = [line.strip() for line in searchable("agent", text or "").splitlines()]
    return tuple(line[:200] for line in lines if line)[:ANSWER_LINES]


@dataclass(frozen=True)
class Stock:
    """Whether the desk has any solved (or closed) request and any article: a young desk has
    nothing to search through yet."""

    solved: bool
    articles: bool


_STOCK = Statement(
    select(
        select(_TICKETS.c.id).where(_TICKETS.c.status.in_(("solved", "closed"))).exists(),
        select(_ARTICLES.c.id).exists(),
    )
)
# What each database (engine) was found to have, for the life of the process: solved requests
# and articles do not vanish in practice, and should one, the search merely finds nothing.
_HAS: weakref.WeakKeyDictionary[Engine, Stock] = weakref.WeakKeyDictionary()


def stock(conn: Connection) -> Stock:
    """What there is to search: one statement until both are found, then none."""
    known = _HAS.get(conn.engine, Stock(False, False))
    if known.solved and known.articles:
        return known
    solved, articles = _STOCK.first(conn) or (False, False)
    _HAS[conn.engine] = Stock(known.solved or bool(solved), known.articles or bool(articles))
    return Stock(bool(solved), bool(articles))


def similar_solved(
    conn: Connection,
    number: int,
    words: str,
    threshold: float,
    limit: int = 3,
    have: Stock | None = None,
) -> list[Similar]:
    """Up to ``limit`` solved (or closed) requests like ``words``, best first (``have``: what
    :func:`stock` found just now)."""
    if not (have or stock(conn)).solved:  # a young desk: nothing to look through yet
        return []
    hits = message_hits(conn, words, any_term=True, limit=CANDIDATES, solved=True)
    others = list(dict.fromkeys(t for _, t, _ in hits if t != number))[:SCORED]
    if not others:
        return []
    t = _TICKETS.c
    done = dict(conn.execute(select(t.id, t.subject).where(t.id.in_(others))).all())
    terms = query_terms(words, ANY_TERMS)
    questions = _questions(conn, [n for n in others if n in done])
    scored = sorted(
        ((similarity(terms, q), n) for n, q in questions.items()), key=lambda x: (-x[0], -x[1])
    )
    return [
        Similar(n, done[n], round(score, 2), _answer(conn, n))
        for score, n in scored[:limit]
        if score >= threshold
    ]


def scored_articles(
    conn: Connection, words: str, base_url: str, have: Stock | None = None
) -> list[Article]:
    """Every article the search finds for ``words``, scored, best first: one search that both
    the acknowledgement's suggestions and the notification's list are cut from (``have``: what
    :func:`stock` found just now)."""
    if not (have or stock(conn)).articles:
        return []
    ids = [i for i, _ in article_hits(conn, words, any_term=True, limit=20)]
    if not ids:
        return []
    a = _ARTICLES.c
    rows = conn.execute(select(a.id, a.title, a.body, a.internal).where(a.id.in_(ids))).all()
    terms = query_terms(words, ANY_TERMS)
    found = [
        Article(
            r.id,
            r.title,
            round(similarity(terms, f"{r.title}\n{r.body}"), 2),
            r.internal,
            f"{base_url.rstrip('/')}/kb/{r.id}",
        )
        for r in rows
    ]
    found.sort(key=lambda x: -x.score)
    return found


def matching_articles(
    conn: Connection,
    words: str,
    threshold: float,
    *,
    internal: bool,
    base_url: str,
    limit: int,
    scored: list[Article] | None = None,
) -> list[Article]:
    """Articles like ``words`` above ``threshold``, best first (internal ones only if asked);
    ``scored``: what :func:`scored_articles` found for these words already."""
    if scored is None:
        scored = scored_articles(conn, words, base_url)
    found = [x for x in scored if internal or not x.internal]
    return [x for x in found if x.score >= threshold][:limit]


_WORDS = {
    "en": ("Similar solved requests:", "Articles:", "similarity", "internal"),
    "ru": ("Похожие решённые запросы:", "Статьи базы знаний:", "сходство", "внутренняя"),
}


def similar_lines(
    conn: Connection,
    config: Config,
    number: int,
    words: str,
    scored: list[Article] | None = None,
    have: Stock | None = None,
) -> list[str]:
    """The notification's section on what the desk already knows, in the desk's language."""
    kb = config.kb
    solved = similar_solved(conn, number, words, kb.similar_threshold, have=have)
    articles = matching_articles(
        conn,
        words,
        kb.similar_threshold,
        internal=True,
        base_url=config.web.base_url,
        limit=3,
        scored=scored,
    )
    head, arts, sim, inner = _WORDS.get(config.desk.language, _WORDS["en"])
    lines: list[str] = []
    if solved:
        lines.append(head)
    for s in solved:
        lines.append(f"  #{s.number} {s.subject} ({sim} {s.score})")
        lines += [f"      {line}" for line in s.answer]
    if articles:
        lines.append(arts)
    for a in articles:
        where = inner if a.internal else a.url
        lines.append(f"  {a.number}. {a.title} ({sim} {a.score}) {where}")
    return lines


def suggestions(
    conn: Connection, config: Config, words: str, scored: list[Article] | None = None
) -> list[Article]:
    """Up to two public articles for the acknowledgement, above ``[kb] suggest_threshold``."""
    return matching_articles(
        conn,
        words,
        config.kb.suggest_threshold,
        internal=False,
        base_url=config.web.base_url,
        limit=2,
        scored=scored,
    )
