"""The full-text index on both stores, written in the transaction that stores the message.

SQLite: FTS5 tables of Snowball stems (maild.knowledge.text), ``message_fts`` (rowid = the
message's id, contentless: one small insert per message) and ``article_fts``. A message's row
is written as one of the last writes of its transaction (see :func:`index_message`).
PostgreSQL:
GIN indexes over ``to_tsvector('russian', …) || to_tsvector('english', …)`` of the rows
themselves, kept by the server in the same transaction; nothing to write here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection, event, text
from sqlalchemy.orm import Session, SessionTransaction

from maild.knowledge.text import PREFIX_LENGTHS, indexed, match_key, stem
from maild.replies.quotes import strip_quoted
from maild.store.direct import Statement
from maild.tickets.commands import parse_commands

log = logging.getLogger(__name__)

INDEXED_KINDS = ("customer", "agent")  # what a customer wrote and what agents answered
PG_LIMIT = 100_000  # characters of a row given to to_tsvector (its limit is 1 MB of lexemes)


def _both(expr: str) -> str:
    limited = f"left({expr}, {PG_LIMIT})"
    return (
        f"(to_tsvector('russian'::regconfig, {limited}) || "
        f"to_tsvector('english'::regconfig, {limited}))"
    )


# An agent's command lines are left out on PostgreSQL too (its quotes are not: that needs
# Python; they only repeat words of the same request).
_PG_BODY = (
    "CASE WHEN messages.kind = 'agent' THEN "
    "regexp_replace(messages.text, '^(\\s*#[A-Za-z][^\\n]*\\n)+', '') "
    "ELSE messages.text END"
)
PG_MESSAGE_VECTOR = _both(f"messages.subject || ' ' || {_PG_BODY}")
PG_ARTICLE_VECTOR = _both("kb_articles.title || ' ' || kb_articles.body")
_PG_KINDS = "messages.direction = 'in' AND messages.kind IN ('customer', 'agent')"

# A prefix index for each length a Russian key can have (text.match_key).
_FTS5_OPTIONS = (
    f"tokenize='unicode61 remove_diacritics 0', prefix='{' '.join(str(n) for n in PREFIX_LENGTHS)}'"
)
SQLITE_DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5(body, content='', {_FTS5_OPTIONS})",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS article_fts USING fts5(title, body, {_FTS5_OPTIONS})",
)
PG_DDL = (
    "CREATE INDEX IF NOT EXISTS ix_messages_fts ON messages USING gin ("
    + PG_MESSAGE_VECTOR.replace("messages.", "")
    + ") WHERE direction = 'in' AND kind IN ('customer', 'agent')",
    "CREATE INDEX IF NOT EXISTS ix_kb_articles_fts ON kb_articles USING gin ("
    + PG_ARTICLE_VECTOR.replace("kb_articles.", "")
    + ")",
)
FTS_TABLES = ("message_fts", "article_fts")
FTS_OBJECTS = (*FTS_TABLES, "ix_messages_fts", "ix_kb_articles_fts")  # not in the models

_MSG_INSERT = text("INSERT INTO message_fts (rowid, body) VALUES (:id, :body)")
_MSG_ROW = Statement(_MSG_INSERT)  # one row, for every message stored (maild.store.direct)


def searchable(kind: str, body: str) -> str:
    """The part of a message worth finding: an agent's words without commands or quotes."""
    if kind == "agent":
        return strip_quoted(parse_commands(body).body)
    return body


def index_row(kind: str, subject: str, body: str) -> str:
    """What the SQLite index holds of a message: the stems of its subject and searchable text."""
    return indexed(subject, searchable(kind, body))


def index_message(
    session: Session, msg_id: int, kind: str, subject: str, body: str, row: str | None = None
) -> None:
    """Index one stored message (customer mail, agent answer): on SQLite, one row, written
    when the transaction commits (or a savepoint begins or ends), after every other write.

    FTS5 keeps what it is given in memory until the transaction commits, and writes it out
    as a new segment whenever a later statement of the transaction opens a statement savepoint
    (an UPDATE ... RETURNING, a write under foreign keys: most of the pipeline's). Written
    one message at a time in the pipeline's transaction of many messages, that was a segment
    (and later merges) for every message; written last, it is one for the transaction. Nothing
    reads a message's index row in the transaction that stores it. ``row``: the message's
    :func:`index_row`, when it was worked out already."""
    if kind not in INDEXED_KINDS or session.get_bind().dialect.name != "sqlite":
        return
    body = row if row is not None else index_row(kind, subject, body)
    owner = session.get_nested_transaction() or session.get_transaction()
    pending = session.info.setdefault(_PENDING, [])
    pending.append((owner, {"id": msg_id, "body": body}))


# session.info: the rows of index_message not written yet, each with the transaction (or
# savepoint) it belongs to: a savepoint rolled back takes its own rows with it.
_PENDING = "maild.knowledge.index"


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    pending = session.info.get(_PENDING)
    if not pending:
        return
    savepoint = session.get_nested_transaction()
    if savepoint is not None:  # released: its rows are the enclosing transaction's now
        session.info[_PENDING] = [
            (savepoint.parent if owner is savepoint else owner, row) for owner, row in pending
        ]
        return
    session.flush()  # the ORM's own changes first: the index rows are the last writes
    del session.info[_PENDING]
    _MSG_ROW.executemany(session, [row for _owner, row in pending])


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    pending = session.info.get(_PENDING)
    if pending:
        kept = [(owner, row) for owner, row in pending if not _within(owner, previous)]
        session.info[_PENDING] = kept


def _within(owner: SessionTransaction | None, gone: SessionTransaction) -> bool:
    while owner is not None:
        if owner is gone:
            return True
        owner = owner.parent
    return False


def index_article(conn: Connection, article_id: int, title: str, body: str, *, new: bool) -> None:
    if conn.dialect.name != "sqlite":
        return
    if not new:
        conn.execute(text("DELETE FROM article_fts WHERE rowid = :id"), {"id": article_id})
    conn.execute(
        text("INSERT INTO article_fts (rowid, title, body) VALUES (:id, :title, :body)"),
        {"id": article_id, "title": indexed(title), "body": indexed(body)},
    )


def create(conn: Connection) -> None:
    """The index's tables (SQLite) or GIN indexes (PostgreSQL)."""
    for ddl in SQLITE_DDL if conn.dialect.name == "sqlite" else PG_DDL:
        conn.execute(text(ddl))


def rebuild(conn: Connection) -> int:
    """Index every stored message and article again (SQLite; PostgreSQL's indexes build
    themselves). Returns how many messages were indexed."""
    if conn.dialect.name != "sqlite":
        return 0
    conn.execute(text("DELETE FROM message_fts"))
    conn.execute(text("DELETE FROM article_fts"))
    rows = conn.execute(
        text(
            "SELECT id, kind, subject, text FROM messages "
            "WHERE direction = 'in' AND kind IN ('customer', 'agent')"
        )
    )
    count = 0
    batch: list[dict[str, object]] = []
    for msg_id, kind, subject, body in rows.fetchall():
        batch.append({"id": msg_id, "body": indexed(subject, searchable(kind, body))})
        count += 1
        if len(batch) >= 1000:
            conn.execute(_MSG_INSERT, batch)
            batch = []
    if batch:
        conn.execute(_MSG_INSERT, batch)
    for art_id, title, body in conn.execute(text("SELECT id, title, body FROM kb_articles")):
        index_article(conn, art_id, title, body, new=True)
    # Said only when there was something to index: an empty database starts quietly.
    (log.info if count else log.debug)("full-text index rebuilt: %d messages", count)
    return count


def fts5_query(words: Sequence[str], any_term: bool) -> str:
    """An FTS5 MATCH expression of quoted stems: all of them (Russian ones as prefixes), or
    any (exact stems: a prefix of each of many words costs more than it finds)."""
    parts = []
    for word in words:
        key, prefix = match_key(word) if not any_term else (stem(word), False)
        parts.append(f'"{key}"*' if prefix else f'"{key}"')
    return (" OR " if any_term else " AND ").join(parts)


def pg_query(words: Sequence[str], any_term: bool) -> tuple[str, dict[str, str]]:
    """A tsquery expression and its parameters: all words, a Russian one by its Snowball
    stem as a prefix (as on SQLite), or any word (no prefixes); a word without a prefix goes
    through the russian configuration (which stems Latin words in English)."""
    parts, params = [], {}
    for i, word in enumerate(words):
        key, prefix = match_key(word)
        if prefix and not any_term:
            parts.append(f"to_tsquery('simple', :t{i})")
            params[f"t{i}"] = f"{key}:*"
        else:
            parts.append(f"to_tsquery('russian', :t{i})")
            params[f"t{i}"] = word
    return (" || " if any_term else " && ").join(parts), params
