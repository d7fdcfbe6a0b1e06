"""SQLAlchemy 2.x typed models: inbound raw mail, requests, messages, events, outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY, PostgreSQL is happy with BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Inbound(Base):
    """A raw message as it was accepted, before and after the pipeline saw it."""

    __tablename__ = "inbound"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(16))
    envelope_from: Mapped[str | None] = mapped_column(String(512))
    recipients: Mapped[str] = mapped_column(Text, default="")
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998))
    size: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # pending -> done | quarantined | duplicate
    state: Mapped[str] = mapped_column(String(16), default="pending")
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The thread's root Message-ID, hashed (maild.threading.rawids.thread_key): pipeline workers
    # share mail by it, so that a reply is handled after the mail it answers.
    thread_key: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_inbound_state", "state", "id"),
        Index("ix_inbound_message_id", "message_id"),
    )


class Counter(Base):
    """Named sequences without gaps (request numbers)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Ticket(Base):
    """A request: one conversation with one customer."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    subject: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(320))
    requester_name: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16), default="new")
    type: Mapped[str] = mapped_column(String(16), default="question")
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    assignee: Mapped[str | None] = mapped_column(String(320))
    category: Mapped[str | None] = mapped_column(String(128))
    language: Mapped[str] = mapped_column(String(8), default="en")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    root_message_id: Mapped[str | None] = mapped_column(String(998))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_response_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The clock (migration 0002): every due mail is a column, so sweeps are plain queries.
    status_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    solved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    survey_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    survey_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rating: Mapped[str | None] = mapped_column(String(8))
    rating_comment: Mapped[str | None] = mapped_column(Text)
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sla_warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sla_breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hold_department: Mapped[str | None] = mapped_column(String(128))
    last_customer_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The mail circuit breaker (migration h9loop): when it stopped this request's mail, and
    # when an agent last let it go again (counting starts there).
    mail_held_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    mail_released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Mass incidents (migration h12inc): the problem of an incident, the request this one was
    # merged into, the normalised words (maild.tickets.incidents), and on a problem the count
    # the lead was last told and when the agents last got a digest.
    problem_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    fingerprint: Mapped[str | None] = mapped_column(Text)
    incident_told: Mapped[int | None] = mapped_column(Integer)
    digest_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    ccs: Mapped[list[TicketCc]] = relationship(
        back_populates="ticket", cascade="all, delete-orphan", order_by="TicketCc.email"
    )

    __table_args__ = (
        Index("ix_tickets_status", "status"),
        Index("ix_tickets_requester", "requester"),
        Index("ix_tickets_survey_due", "survey_due_at"),
        Index("ix_tickets_problem", "problem_id"),
        Index("ix_tickets_created", "created_at"),
    )


class TicketCc(Base):
    """A person copied on a request: gets its public replies and may write into it."""

    __tablename__ = "ticket_cc"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    ticket: Mapped[Ticket] = relationship(back_populates="ccs")


class Message(Base):
    """One mail of a request, in or out; kept with its text for display."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound.id"))
    direction: Mapped[str] = mapped_column(String(3))
    # customer | agent | note | department | system | auto-reply | bounce | list | loop
    kind: Mapped[str] = mapped_column(String(16))
    from_addr: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(256), default="")
    to_addrs: Mapped[str] = mapped_column(Text, default="")
    cc_addrs: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str | None] = mapped_column(String(998))
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text)  # as received: sanitise where rendered
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="Attachment.id"
    )

    __table_args__ = (
        Index("ix_messages_message_id", "message_id"),
        Index("ix_messages_ticket", "ticket_id", "id"),
    )


class Blob(Base):
    """Attachment content, stored once per content hash."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Attachment(Base):
    """An attachment of a message; the file name is display text only, never a path."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    message: Mapped[Message] = relationship(back_populates="attachments")


class Event(Base):
    """One line of a request's history."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(320), default="")
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_events_ticket", "ticket_id", "id"),)


class Outbox(Base):
    """A mail to send, written in the same transaction as the change that caused it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    kind: Mapped[str] = mapped_column(String(32))
    envelope_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[str] = mapped_column(Text)
    rate_key: Mapped[str | None] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(998))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # queued -> sent | failed
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The sender instance holding the lease (outbox_senders.instance), NULL when free.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Recipients refused for good (5xx) on an earlier attempt, with the relay's reply: kept
    # when a later attempt delivers to the deferred ones.
    refused: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_rate", "rate_key", "created_at"),
        Index("ix_outbox_ticket", "ticket_id", "created_at"),
        UniqueConstraint("message_id", name="uq_outbox_message_id"),
    )


class SenderInstance(Base):
    """A running outbox sender and its heartbeat: leases of one that is gone are released."""

    __tablename__ = "outbox_senders"

    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Undeliverable(Base):
    """An address a bounce named: no mail goes to it until it writes to us again."""

    __tablename__ = "undeliverable"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    reason: Mapped[str] = mapped_column(Text, default="")


class KbArticle(Base):
    """A knowledge-base article written from an agent's answer (`#kb`); internal ones stay
    in agent mail. Its full-text index lives beside it (maild.knowledge.index)."""

    __tablename__ = "kb_articles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    author: Mapped[str] = mapped_column(String(320), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class KbArticleVersion(Base):
    """Every version an article had, the current one included (`#kb N` adds one)."""

    __tablename__ = "kb_article_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("kb_articles.id"))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    author: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_kb_article_versions_article", "article_id", "version"),)
