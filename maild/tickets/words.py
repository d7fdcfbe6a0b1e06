"""The desk's words as types: what a request, a sender, a row can be (StrEnums, pure).

A member is its string (``Status.SOLVED == "solved"``), so the database, JSON and templates
read exactly what they read before; mypy now catches a misspelt one. The tuples of values
are for messages and choices, which show the plain words.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    HOLD = "hold"
    SOLVED = "solved"
    CLOSED = "closed"


class TicketType(StrEnum):
    QUESTION = "question"
    PROBLEM = "problem"
    INCIDENT = "incident"
    TASK = "task"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Role(StrEnum):
    """Who a message is from once proven (maild.pipeline.identify)."""

    CUSTOMER = "customer"
    AGENT = "agent"
    DEPARTMENT = "department"


class Action(StrEnum):
    """What the apply stage (or an agent's mail) did with an inbound message."""

    NONE = ""
    CREATED = "created"
    CUSTOMER_REPLY = "customer-reply"
    DEPARTMENT = "department"
    AUTOMATIC = "automatic"
    INCIDENT = "incident"
    AGENT = "agent"
    AGENT_QUERY = "agent-query"
    AGENT_ERROR = "agent-error"


class AgentProof(StrEnum):
    """How an agent's or a department's mail may prove who wrote it (``[security]``)."""

    SIGNED_ID = "signed-id"
    DKIM = "dkim"
    AUTHRES = "authres"


class Rating(StrEnum):
    GOOD = "good"
    BAD = "bad"


class InboundState(StrEnum):
    """An ``inbound`` row: pending -> done | quarantined | duplicate."""

    PENDING = "pending"
    DONE = "done"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"


class OutboxState(StrEnum):
    """An ``outbox`` row: queued -> sent | failed."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
TYPES: tuple[str, ...] = tuple(t.value for t in TicketType)
PRIORITIES: tuple[str, ...] = tuple(p.value for p in Priority)
AGENT_PROOFS: tuple[str, ...] = tuple(p.value for p in AgentProof)
RATINGS: tuple[str, ...] = tuple(r.value for r in Rating)
OPEN_STATUSES: tuple[str, ...] = (Status.NEW, Status.OPEN, Status.PENDING, Status.HOLD)
