"""Searching requests and articles: the same answers from SQLite FTS5 and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, select, text

from maild.knowledge.index import (
    _PG_KINDS,
    PG_ARTICLE_VECTOR,
    PG_MESSAGE_VECTOR,
    fts5_query,
    pg_query,
    searchable,
)
from maild.knowledge.text import QUERY_TERMS, query_terms, query_words, snippet
from maild.store.models import KbArticle, Message, Ticket

log = logging.getLogger(__name__)

ANY_TERMS = 10  # words of a mail asked for when any may match (similar requests, articles)
CANDIDATES = 500  # only the newest matches are ranked, on both stores
RARE = 300  # a word in fewer messages than this tells a request apart
_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_TICKETS: Table = Ticket.__table__  # type: ignore[assignment]
_ARTICLES: Table = KbArticle.__table__  # type: ignore[assignment]  # PostgreSQL ranks at most this many of the newest matches


@dataclass(frozen=True)
class Hit:
    """One request or article found: its number, title, score and a snippet."""

    kind: str  # "request" | "article"
    number: int
    title: str
    score: float
    snippet: str
    status: str  # the request's status; "public" or "internal" for an article

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "number": self.number,
            "title": self.title,
            "score": self.score,
            "snippet": self.snippet,
            "status": self.status,
        }


# Only the newest CANDIDATES matches are ranked (bm25 per row is the cost of a common word),
# found by their rowid: the ranked scan then seeks to that rowid.
_SQLITE_NEWEST = (
    "coalesce((SELECT min(rowid) FROM (SELECT rowid FROM message_fts WHERE message_fts "
    f"MATCH :q ORDER BY rowid DESC LIMIT {CANDIDATES})), 0)"
)
_SOLVED = "t.status IN ('solved', 'closed')"


def _sqlite_messages(solved: bool, window: bool = True) -> str:
    join = f"JOIN tickets t ON t.id = m.ticket_id AND {_SOLVED} " if solved else ""
    newest = f"AND rowid >= {_SQLITE_NEWEST} " if window else ""
    return (
        "SELECT f.rowid, m.ticket_id, -f.rank FROM (SELECT rowid, rank FROM message_fts "
        f"WHERE message_fts MATCH :q {newest}ORDER BY rank LIMIT :n) f "
        f"JOIN messages m ON m.id = f.rowid {join}"
        "WHERE m.ticket_id IS NOT NULL ORDER BY f.rank"
    )


_SQLITE_ARTICLES = (
    "SELECT rowid, -rank FROM article_fts WHERE article_fts MATCH :q ORDER BY rank LIMIT :n"
)


# ts_rank's normalisation 1 divides by 1 + the log of the text's length: as bm25 on SQLite, a
# short mail holding the words ranks above a long one that holds them among many others.
def _pg_messages(tsquery: str, solved: bool, window: bool = True) -> str:
    join = f"JOIN tickets t ON t.id = messages.ticket_id AND {_SOLVED} " if solved else ""
    newest = f"ORDER BY messages.id DESC LIMIT {CANDIDATES}" if window else ""
    return (
        f"WITH q AS (SELECT {tsquery} AS q), "
        f"hits AS (SELECT messages.id FROM messages, q WHERE {_PG_KINDS} "
        f"AND {PG_MESSAGE_VECTOR} @@ q.q {newest}) "
        f"SELECT messages.id, messages.ticket_id, ts_rank({PG_MESSAGE_VECTOR}, q.q, 1) AS score "
        f"FROM messages JOIN hits ON hits.id = messages.id {join}CROSS JOIN q "
        "WHERE messages.ticket_id IS NOT NULL ORDER BY score DESC LIMIT :n"
    )


def _pg_articles(tsquery: str) -> str:
    return (
        f"WITH q AS (SELECT {tsquery} AS q) "
        f"SELECT kb_articles.id, ts_rank({PG_ARTICLE_VECTOR}, q.q) AS score "
        f"FROM kb_articles, q WHERE {PG_ARTICLE_VECTOR} @@ q.q ORDER BY score DESC LIMIT :n"
    )


def _run(
    conn: Connection, words: str, any_term: bool, sqlite: str, pg: Callable[[str], str], n: int
) -> list[tuple[Any, ...]]:
    found = query_words(words, ANY_TERMS if any_term else QUERY_TERMS)
    if not found:
        return []
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text(sqlite), {"q": fts5_query(found, any_term), "n": n})
        return [tuple(r) for r in rows]
    tsquery, params = pg_query(found, any_term)
    return [tuple(r) for r in conn.execute(text(pg(tsquery)), {**params, "n": n})]


def message_hits(
    conn: Connection, words: str, *, any_term: bool = False, limit: int = 50, solved: bool = False
) -> list[tuple[int, int, float]]:
    """(message id, request number, score) of indexed messages matching ``words``, best
    first: all of the words, or with ``any_term`` any of them; ``solved``: only of solved
    or closed requests."""
    if any_term:
        return _distinctive_hits(conn, words, limit, solved)
    rows = _run(
        conn,
        words,
        any_term,
        _sqlite_messages(solved),
        lambda q: _pg_messages(q, solved),
        limit,
    )
    return [(int(r[0]), int(r[1]), float(r[2])) for r in rows]


_SQLITE_CAPPED = (
    f"SELECT count(*) FROM (SELECT 1 FROM message_fts WHERE message_fts MATCH :q LIMIT {RARE})"
)


def _pg_capped(tsquery: str) -> str:
    return (
        f"SELECT count(*) FROM (SELECT 1 FROM messages WHERE {_PG_KINDS} "
        f"AND {PG_MESSAGE_VECTOR} @@ {tsquery} LIMIT {RARE}) c"
    )


def _rare(conn: Connection, words: list[str]) -> list[str]:
    """Those of ``words`` fewer than RARE messages hold: each counted (up to RARE), all in
    one statement."""
    parts: list[str] = []
    params: dict[str, str] = {}
    for i, word in enumerate(words):
        if conn.dialect.name == "sqlite":
            capped = _SQLITE_CAPPED.replace(":q", f":q{i}")
            params[f"q{i}"] = fts5_query([word], True)
        else:
            tsquery, one = pg_query([word], True)
            capped = _pg_capped(tsquery.replace(":t0", f":q{i}"))
            params[f"q{i}"] = one["t0"]
        parts.append(f"SELECT {i} AS word, ({capped}) AS found")
    rows = conn.execute(text(" UNION ALL ".join(parts)), params)
    counts = {int(i): int(n) for i, n in rows}
    return [w for i, w in enumerate(words) if counts[i] < RARE]


def _sqlite_counted(terms: int, solved: bool) -> str:
    """Common words only: the newest CANDIDATES matches of any of them, ranked by how many of
    the words each holds, squared, over its length (as the similarity score, shared words over
    the root of the sizes, will rank them; newest first among equals). bm25 would first count
    every row each word is in, ten long lists for a whole mail: 25–36 ms at 50,000 requests
    against 10–16, and its picks scored lower (bench/README.md, "Knowledge")."""
    join = f"JOIN tickets t ON t.id = m.ticket_id AND {_SOLVED} " if solved else ""
    each = " UNION ALL ".join(
        f"SELECT rowid FROM message_fts WHERE message_fts MATCH :t{i} "
        "AND rowid >= (SELECT lo FROM w)"
        for i in range(terms)
    )
    return (
        "WITH w AS (SELECT coalesce(min(rowid), 0) AS lo FROM (SELECT rowid FROM message_fts "
        f"WHERE message_fts MATCH :q ORDER BY rowid DESC LIMIT {CANDIDATES})), h AS ({each}) "
        "SELECT h.rowid, m.ticket_id, count(*) * count(*) * 1.0 / (length(m.text) + 100) AS score "
        "FROM h JOIN messages m ON m.id = h.rowid "
        f"{join}WHERE m.ticket_id IS NOT NULL GROUP BY h.rowid ORDER BY score DESC, h.rowid DESC "
        "LIMIT :n"
    )


def _counted_params(words: list[str], limit: int) -> dict[str, object]:
    params: dict[str, object] = {"q": fts5_query(words, True), "n": limit}
    params.update({f"t{i}": fts5_query([w], True) for i, w in enumerate(words)})
    return params


def _distinctive_hits(
    conn: Connection, words: str, limit: int, solved: bool
) -> list[tuple[int, int, float]]:
    """Any of ``words``: when some are rare (fewer than RARE messages hold them: kinit, an
    error code), all matches of those are ranked by bm25, however old; else the newest
    CANDIDATES matches of all of them, by how many of the words they hold on SQLite."""
    found = query_words(words, ANY_TERMS)
    if not found:
        return []
    rare = _rare(conn, found)
    asked = rare or found
    if conn.dialect.name == "sqlite" and not rare:
        rows = conn.execute(
            text(_sqlite_counted(len(found), solved)), _counted_params(found, limit)
        )
    elif conn.dialect.name == "sqlite":
        sql = _sqlite_messages(solved, window=False)
        rows = conn.execute(text(sql), {"q": fts5_query(asked, True), "n": limit})
    else:
        tsquery, params = pg_query(asked, True)
        sql = _pg_messages(tsquery, solved, window=not rare)
        rows = conn.execute(text(sql), {**params, "n": limit})
    return [(int(r[0]), int(r[1]), float(r[2])) for r in rows]


def article_hits(
    conn: Connection, words: str, *, any_term: bool = False, limit: int = 20
) -> list[tuple[int, float]]:
    """(article id, score) of articles matching ``words``, best first."""
    rows = _run(conn, words, any_term, _SQLITE_ARTICLES, _pg_articles, limit)
    return [(int(r[0]), float(r[1])) for r in rows]


def _request_hits(conn: Connection, words: str, limit: int) -> list[Hit]:
    best: dict[int, tuple[int, float]] = {}
    for msg_id, ticket_id, score in message_hits(conn, words, limit=limit * 5):
        best.setdefault(ticket_id, (msg_id, score))
    chosen = list(best.items())[:limit]
    if not chosen:
        return []
    m, t = _MESSAGES.c, _TICKETS.c
    found = select(m.id, m.kind, m.text).where(m.id.in_([x for _, (x, _) in chosen]))
    texts = {row.id: searchable(row.kind, row.text) for row in conn.execute(found)}
    heads = {
        row.id: row
        for row in conn.execute(
            select(t.id, t.subject, t.status).where(t.id.in_([n for n, _ in chosen]))
        )
    }
    terms = query_terms(words)
    return [
        Hit(
            "request",
            n,
            heads[n].subject,
            float(f"{s:.4g}"),
            snippet(texts.get(x, ""), terms),
            heads[n].status,
        )
        for n, (x, s) in chosen
        if n in heads
    ]


def _article_hits(conn: Connection, words: str, limit: int, internal: bool) -> list[Hit]:
    found = article_hits(conn, words, limit=limit * 2)
    if not found:
        return []
    a = _ARTICLES.c
    rows = {
        row.id: row
        for row in conn.execute(
            select(a.id, a.title, a.body, a.internal).where(a.id.in_([i for i, _ in found]))
        )
    }
    terms = query_terms(words)
    hits = [
        Hit(
            "article",
            i,
            rows[i].title,
            float(f"{s:.4g}"),
            snippet(rows[i].body, terms),
            "internal" if rows[i].internal else "public",
        )
        for i, s in found
        if i in rows and (internal or not rows[i].internal)
    ]
    return hits[:limit]


def search(conn: Connection, words: str, *, limit: int = 20, internal: bool = True) -> list[Hit]:
    """Requests and articles matching all of ``words``, articles first, each best first."""
    return _article_hits(conn, words, limit, internal) + _request_hits(conn, words, limit)


def public_articles(conn: Connection, words: str, limit: int = 50) -> list[Hit]:
    return _article_hits(conn, words, limit, internal=False)
