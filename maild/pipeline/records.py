"""Rows the stages write: request numbers, messages with attachments, CCs, history events."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from maild.config import Config
from maild.ingest.parse import ParsedMail
from maild.knowledge.index import index_message, index_row
from maild.pipeline.base import Context, Work
from maild.pipeline.classify import verdict_of
from maild.pipeline.msgids import unclaimable
from maild.replies import tally
from maild.store.direct import Statement
from maild.store.events import add_event
from maild.store.loaded import attached, in_session
from maild.store.models import Attachment, Blob, Counter, Message, Ticket
from maild.threading.tags import strip_reply_prefixes, strip_tag
from maild.tickets.incidents import MIN_WORDS, Key, band_keys, words
from maild.tickets.sla import add_business_hours

log = logging.getLogger(__name__)

# Runs of letters, counted by their lengths: a list a word, not a list a letter.
_CYRILLIC = re.compile(r"[А-Яа-яЁё]+")
_LATIN = re.compile(r"[A-Za-z]+")


def guess_language(text: str, default: str) -> str:
    """ru when the customer writes mostly Cyrillic, en when mostly Latin, else the desk's."""
    sample = text[:2000]
    cyr = sum(map(len, _CYRILLIC.findall(sample)))
    lat = sum(map(len, _LATIN.findall(sample)))
    if cyr + lat < 3:
        return default
    return "ru" if cyr >= lat else "en"


_COUNTERS: Table = Counter.__table__  # type: ignore[assignment]
_NEXT_NUMBER = Statement(
    update(_COUNTERS)
    .where(_COUNTERS.c.name == "ticket")
    .values(value=_COUNTERS.c.value + 1)
    .returning(_COUNTERS.c.value)
)


def next_number(session: Session) -> int:
    """The next request number, without gaps (the counter row is locked until commit)."""
    value = _NEXT_NUMBER.scalar(session)
    if value is None:
        session.add(Counter(name="ticket", value=1))
        session.flush()
        return 1
    return int(value)


def ticket_of(ctx: Context, ticket_id: int) -> Ticket | None:
    """The request, loaded once per message and shared by the stages (the session's identity
    map holds objects weakly, so a stage asking again would often load it again).

    Its row stays locked until the transaction ends (FOR UPDATE; SQLite has one writer anyway),
    so two workers, or a worker and a sweep, never both change one request from the same
    stale read on PostgreSQL.
    """
    key = ("ticket", ticket_id)
    ticket = ctx.cache.get(key)
    if ticket is None:
        ticket = _locked_ticket(ctx.session, ticket_id)
        if ticket is not None:
            ctx.cache[key] = ticket
    assert ticket is None or isinstance(ticket, Ticket)
    return ticket


_TICKET_KEYS = tuple(c.key for c in Ticket.__table__.c)
_TICKET_ROW = Statement(
    select(Ticket.__table__).where(Ticket.id == bindparam("id")).with_for_update()
)


def _locked_ticket(session: Session, ticket_id: int) -> Ticket | None:
    """What ``session.get(Ticket, ticket_id, with_for_update=True)`` gives, with the SELECT run
    on the driver (maild.store.direct): pending changes flushed first (unless the caller is in
    ``no_autoflush``), the row locked, and the session's own object when it holds one already
    (its attributes as this session left them)."""
    if session.autoflush:
        session.flush()
    row = _TICKET_ROW.first(session, {"id": ticket_id})
    if row is None:
        return None
    known = in_session(session, Ticket, ticket_id)
    if known is not None:
        return known
    return attached(session, Ticket, dict(zip(_TICKET_KEYS, row, strict=True)))


_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_MESSAGE_INSERT = Statement(insert(_MESSAGES).returning(_MESSAGES.c.id))
_ATTACHMENT_INSERT = Statement(insert(Attachment.__table__))  # type: ignore[arg-type]
_BLOBS: Table = Blob.__table__  # type: ignore[assignment]
# Content stored once per hash; a concurrent writer of the same content is no error.
_BLOB_INSERT = {
    "sqlite": Statement(
        sqlite_insert(_BLOBS).on_conflict_do_nothing(index_elements=[_BLOBS.c.sha256])
    ),
    "postgresql": Statement(
        pg_insert(_BLOBS).on_conflict_do_nothing(index_elements=[_BLOBS.c.sha256])
    ),
}


def _store_attachments(session: Session, message_id: int, parsed: ParsedMail) -> None:
    if not parsed.attachments:
        return
    conn = session.connection()
    rows, blobs = [], {}
    for att in parsed.attachments:
        sha = hashlib.sha256(att.data).hexdigest()
        blobs[sha] = {"sha256": sha, "size": len(att.data), "data": att.data}
        rows.append(
            {
                "message_id": message_id,
                "filename": att.filename,
                "content_type": att.content_type,
                "size": len(att.data),
                "sha256": sha,
            }
        )
    _BLOB_INSERT[conn.dialect.name].executemany(conn, list(blobs.values()))
    _ATTACHMENT_INSERT.executemany(conn, rows)


def store_message(work: Work, ctx: Context, ticket_id: int | None, kind: str) -> int:
    """The inbound message's row (and its attachments); returns the row's id.

    A Message-ID that is not this mail's to claim (see maild.pipeline.msgids) is left out of
    the row, so no reference can follow it here; the request's history says so.
    """
    parsed = work.parsed
    assert parsed is not None
    refused = unclaimable(ctx, parsed)
    row = {
        "ticket_id": ticket_id,
        "inbound_id": work.inbound_id,
        "direction": "in",
        "kind": kind,
        "from_addr": parsed.from_addr,
        "from_name": parsed.from_name,
        "to_addrs": ",".join(parsed.to),
        "cc_addrs": ",".join(parsed.cc),
        "subject": parsed.subject,
        "message_id": parsed.message_id if refused is None else None,
        "in_reply_to": (parsed.in_reply_to or (None,))[0],
        "text": parsed.text,
        "html": parsed.html,
        "created_at": ctx.clock(),
    }
    msg_id = int(_MESSAGE_INSERT.scalar(ctx.session, row))
    prepared = parsed.memo.get(("index", kind))
    stems = prepared if isinstance(prepared, str) else None
    index_message(ctx.session, msg_id, kind, parsed.subject, parsed.text, row=stems)
    _store_attachments(ctx.session, msg_id, parsed)
    if refused is not None:
        _not_indexed(work, ctx, ticket_id, msg_id, refused)
    return msg_id


def _not_indexed(
    work: Work, ctx: Context, ticket_id: int | None, msg_id: int, refused: dict[str, object]
) -> None:
    """Say that a mail's Message-ID was not indexed. An agent's (or department's) own mail
    client minting ids in the desk's domain is expected, and said only at DEBUG."""
    if "held_by" not in refused and work.role in ("agent", "department"):
        log.debug("inbound %d: Message-ID not indexed: %s", work.inbound_id, refused["reason"])
        return
    log.warning("inbound %d: Message-ID not indexed: %s", work.inbound_id, refused["reason"])
    if ticket_id is not None:
        sender = work.parsed.from_addr if work.parsed else ""
        add_event(
            ctx.session,
            ticket_id,
            ctx.clock(),
            "message-id-not-indexed",
            sender,
            message=msg_id,
            **refused,
        )


def set_due(ticket: Ticket, config: Config) -> None:
    """The first-response deadline, in business hours from creation, by type and priority
    (or by the request's category when ``[sla.categories]`` gives it a clock of its own)."""
    ticket.due_at = due_at(config, ticket.type, ticket.priority, ticket.category, ticket.created_at)


def due_at(
    config: Config, type_: str, priority: str, category: str | None, created: datetime
) -> datetime:
    hours = config.sla.hours(type_, priority, category)
    return add_business_hours(created, hours, config.hours)


_TICKETS: Table = Ticket.__table__  # type: ignore[assignment]
_TICKET_INSERT = Statement(insert(_TICKETS))


def prepare(parsed: ParsedMail, envelope_from: str | None, config: Config, *, sqlite: bool) -> None:
    """Work out, before the write transaction, what the stages will want of a mail that
    depends on nothing else: its verdict (classify), its index row (SQLite) and, when it looks
    like a new request (no In-Reply-To, no References), its language, its words and their
    MinHash keys. On SQLite the stages run one worker at a time (one writer) while every
    worker parses at once; whatever was not prepared (an agent's mail, a reply that turns out
    new) is worked out in the stage."""
    verdict_of(parsed, envelope_from, config)
    if sqlite:
        parsed.memo[("index", "customer")] = index_row("customer", parsed.subject, parsed.text)
    if parsed.in_reply_to or parsed.references:
        return
    subject = _subject(parsed, config.desk.tag)
    request_keys(parsed, subject)
    _language(parsed, config.desk.language)


def _subject(parsed: ParsedMail, tag: str) -> str:
    """A new request's subject: the mail's, without reply prefixes or the desk's tag."""
    return strip_reply_prefixes(strip_tag(parsed.subject, tag))[:1000]


def _language(parsed: ParsedMail, default: str) -> str:
    return parsed.remembered(
        ("language", default), lambda: guess_language(f"{parsed.subject}\n{parsed.text}", default)
    )


def request_words(parsed: ParsedMail, subject: str) -> frozenset[str]:
    """A new request's normalised words (maild.tickets.incidents), once per mail."""
    return parsed.remembered(("words", subject), lambda: words(subject, parsed.text))


def request_keys(parsed: ParsedMail, subject: str) -> list[Key]:
    """The MinHash keys of a new request's words (maild.tickets.incidents), once per mail."""
    return parsed.remembered(
        ("band keys", subject), lambda: band_keys(request_words(parsed, subject))
    )


def new_ticket(ctx: Context, parsed: ParsedMail, parent_id: int | None, *, alike: bool) -> Ticket:
    """A new request, written at once with one INSERT (not an ORM flush: this is the hot path).

    ``alike``: a customer's request, which the "incident" stage compares with the others: its
    words (:func:`request_words`) go in the row now as its fingerprint.
    """
    now, config = ctx.clock(), ctx.config
    subject = _subject(parsed, config.desk.tag)
    row: dict[str, Any] = dict.fromkeys(_TICKET_KEYS)  # what is not said here is NULL
    row.update(
        id=next_number(ctx.session),
        subject=subject,
        requester=parsed.from_addr,
        requester_name=parsed.from_name,
        status="new",
        type="question",
        priority="normal",
        language=_language(parsed, config.desk.language),
        parent_id=parent_id,
        root_message_id=parsed.message_id,
        created_at=now,
        updated_at=now,
        status_since=now,
        last_customer_at=now,
    )
    route = config.route(parsed.from_addr)
    if route is not None:  # a key client: their manager has it from the first minute
        row["assignee"] = route.assignee
        row["priority"] = route.priority or row["priority"]
        row["type"] = route.type or row["type"]
    row["due_at"] = due_at(config, row["type"], row["priority"], row["category"], now)
    if alike:
        mine = request_words(parsed, subject)
        row["fingerprint"] = " ".join(sorted(mine)) if len(mine) >= MIN_WORDS else None
    session = ctx.session
    session.flush()  # what the transaction changed before is written first, as it always was
    _TICKET_INSERT.execute(session, row)
    ticket = attached(session, Ticket, row)  # as if loaded: every column known
    set_committed_value(ticket, "ccs", [])  # no CCs yet: nothing to read back
    tally.created(session, ticket.id)
    ctx.cache[("ticket", ticket.id)] = ticket
    return ticket


def answers_us(ctx: Context, ticket: Ticket, parsed: ParsedMail) -> bool:
    refs = (*parsed.in_reply_to, *parsed.references)
    if not refs:
        return False
    found = ctx.session.connection().execute(_ANSWERS_US, {"ticket": ticket.id, "refs": refs})
    return found.first() is not None


_ANSWERS_US = (
    select(_MESSAGES.c.id)
    .where(
        _MESSAGES.c.ticket_id == bindparam("ticket"),
        _MESSAGES.c.direction == "out",
        _MESSAGES.c.message_id.in_(bindparam("refs", expanding=True)),
    )
    .limit(1)
)
