"""What flows through the pipeline: a frozen Work item, a Context, and the Stage protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import Clock
from maild.ingest.parse import ParsedMail
from maild.replies.render import Renderer
from maild.tickets.loops import Verdict
from maild.tickets.words import Action, Role


@dataclass(frozen=True)
class Match:
    """Where a message belongs: an existing request, or a new one (maybe linked to another)."""

    ticket_id: int | None
    linked_to: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class CcChange:
    """Cc addresses of a mail: those that joined the request, those left out over
    `[limits] max_cc` (as read), and how many were left out in all."""

    added: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    left_out_count: int = 0


@dataclass(frozen=True)
class Work:
    """One inbound message on its way through the stages; each stage returns a new one."""

    inbound_id: int
    source: str
    envelope_from: str | None
    parsed: ParsedMail | None = None
    verdict: Verdict | None = None
    role: Role = Role.CUSTOMER  # agent and department are proven
    proof: str = ""  # how the role was proven, or why a claimed one was not
    proven_ticket: int | None = None  # the request a signed Message-ID names
    dkim: frozenset[str] = frozenset()  # DKIM d= domains maild verified (staff From only)
    match: Match | None = None
    ticket_id: int | None = None
    created: bool = False
    action: Action = Action.NONE  # what apply (or an agent's mail) did
    log: tuple[str, ...] = field(default=())
    cc_change: CcChange = field(default_factory=CcChange)  # what the Cc did to the request


@dataclass(frozen=True)
class Context:
    """What a stage may use: the unit of work's session, the configuration, the clock."""

    session: Session
    config: Config
    clock: Clock
    renderer: Renderer
    # Per unit of work: the thread of each request touched, so N mails cost one query.
    cache: dict[object, object] = field(default_factory=dict)


class Stage(Protocol):
    """A step of the pipeline, inside the write transaction. A stage may also have
    ``ahead(ctx)``: what it can read before that transaction (``ctx.session`` only reads),
    once a batch, so that the transaction, which holds SQLite's one write lock, does less;
    and ``rolled_back()``: forget what it kept of a transaction that was rolled back."""

    name: str

    def __call__(self, work: Work, ctx: Context) -> Work: ...
