"""Stage "incident": a new request alike to others becomes an incident of one problem.

Runs after "apply", before "notify". Each worker keeps an index of the recent requests'
words (maild.tickets.incidents), refreshed from the database with one query a request; the
candidates it finds are read back from the database (locked, in id order), so the decision
rests on committed or own rows only, and two workers never open two problems for one group.
A request that opens or joins a problem leaves the stage with action "incident", so "notify"
sends nothing for it: the acknowledgement, the lead's mail and the agents' notification or
digest are queued here (maild.pipeline.incident_mail).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, or_, select

from maild.core.clock import as_utc
from maild.pipeline import incident_mail as tell
from maild.pipeline.base import Context, Work
from maild.pipeline.records import (
    next_number,
    request_keys,
    request_words,
    set_due,
    ticket_of,
)
from maild.replies import tally
from maild.store.direct import Statement
from maild.store.events import add_event
from maild.store.models import Ticket
from maild.tickets.incidents import (
    MIN_WORDS,
    AlikeIndex,
    Entry,
    distinct_customers,
    jaccard,
)
from maild.tickets.status import change_status
from maild.tickets.words import Action, Status

log = logging.getLogger(__name__)

DONE = ("solved", "closed")
# The most alike requests read back (and locked) at most: a problem with hundreds of alike
# incidents is found through the best of them (the problem itself is in the index too).
MAX_CANDIDATES = 50


def is_open_problem(t: Ticket) -> bool:
    return t.type == "problem" and t.status not in DONE and t.merged_into is None


_TICKETS = Ticket.__table__.c
# Compiled once: both run for every new request.
_NEW_ROWS = Statement(
    select(_TICKETS.id, _TICKETS.fingerprint, _TICKETS.created_at, _TICKETS.type, _TICKETS.status)
    .where(
        _TICKETS.id > bindparam("watermark"),
        _TICKETS.fingerprint.is_not(None),
        or_(_TICKETS.created_at >= bindparam("since"), _TICKETS.type == "problem"),
    )
    .order_by(_TICKETS.id)
)
# The candidates' columns the decision needs (no ORM objects), locked in id order.
_CANDIDATES = (
    select(
        _TICKETS.id,
        _TICKETS.fingerprint,
        _TICKETS.type,
        _TICKETS.status,
        _TICKETS.problem_id,
        _TICKETS.merged_into,
        _TICKETS.requester,
    )
    .where(_TICKETS.id.in_(bindparam("ids", expanding=True)))
    .order_by(_TICKETS.id)
    .with_for_update()
)


class Incident:
    name = "incident"

    def __init__(self) -> None:
        self.index = AlikeIndex(0.6)
        self.watermark = 0  # the highest request number read into the index

    def refresh(self, ctx: Context, since: datetime, own: int) -> None:
        """Read the requests numbered above the watermark into the index (all but ``own``,
        which the caller adds); forget old ones.

        Plain Core, no autoflush: only committed rows of other workers and rows this worker
        flushed are read, and this worker's own requests are indexed as they are decided.
        Other workers' numbers below ours are committed already (the request counter stays
        locked until commit), so the watermark never skips one.
        """
        if self.index.threshold != ctx.config.incident.similarity:  # another config's index
            self.index, self.watermark = AlikeIndex(ctx.config.incident.similarity), 0
        params = {"watermark": self.watermark, "since": since}
        for ident, text, stored, kind, status in _NEW_ROWS.all(ctx.session, params):
            self.watermark = max(self.watermark, int(ident))
            if ident == own:
                continue
            created = as_utc(stored)  # SQLite gives it back without the zone
            pinned = kind == "problem" and status not in DONE
            if pinned or created >= since:
                self.index.add(Entry(int(ident), frozenset(text.split()), created, pinned))
        self.index.expire(since)

    def rolled_back(self) -> None:
        """A transaction was rolled back: the requests this worker indexed in it are gone, and
        their numbers may be given to other requests, below the watermark. The index is read
        again from the database (the window's requests) at the next refresh."""
        self.index, self.watermark = AlikeIndex(self.index.threshold), 0

    def ahead(self, ctx: Context) -> None:
        """Before the write transaction (``ctx`` reads only): read what other workers have
        committed into the index, so that the transaction reads only what came after. Their
        MinHash keys are most of the cost, and the transaction holds the write lock."""
        window = timedelta(minutes=ctx.config.incident.window_minutes)
        self.refresh(ctx, ctx.clock() - window, own=0)

    def __call__(self, work: Work, ctx: Context) -> Work:
        if work.action != Action.CREATED or work.role != "customer" or work.ticket_id is None:
            return work
        assert work.parsed is not None
        ticket = ticket_of(ctx, work.ticket_id)
        assert ticket is not None
        mine = request_words(work.parsed, ticket.subject)  # as new_ticket's fingerprint
        if len(mine) < MIN_WORDS:
            return work
        if ticket.fingerprint is None:
            ticket.fingerprint = " ".join(sorted(mine))
        cfg = ctx.config.incident
        self.refresh(ctx, ctx.clock() - timedelta(minutes=cfg.window_minutes), ticket.id)
        keys = request_keys(work.parsed, ticket.subject)
        cap = max(MAX_CANDIDATES, 2 * cfg.threshold)  # enough to reach the threshold
        found = [i for i, _ in self.index.alike(mine, keys) if i != ticket.id][:cap]
        self.index.add(Entry(ticket.id, mine, as_utc(ticket.created_at)), keys)
        self.watermark = max(self.watermark, ticket.id)
        ctx.cache[("alike", ticket.id)] = found  # best first: the notification's related list
        if not found:
            return work
        rows = _candidates(ctx, ticket, found)
        level = cfg.similarity

        def alike(t: Row[Any]) -> bool:  # checked again against the stored words
            return jaccard(mine, frozenset((t.fingerprint or "").split())) >= level

        in_problems = [t for t in rows if t.type == "problem" or t.problem_id is not None]
        problem = _open_problem_of(ctx, [t for t in in_problems if alike(t)])
        if problem is not None:
            join(ctx, problem, ticket, work)
            return replace(work, action=Action.INCIDENT)
        rows = [t for t in rows if t.type != "problem" and t.problem_id is None]
        rows = [t for t in rows if t.status != "closed" and t.merged_into is None]
        if distinct_customers([ticket.requester, *(t.requester for t in rows)]) < cfg.threshold:
            return work  # not enough even if all are still alike
        rows = [t for t in rows if alike(t)]
        if distinct_customers([ticket.requester, *(t.requester for t in rows)]) < cfg.threshold:
            return work
        group = [t for t in (ticket_of(ctx, r.id) for r in rows) if t is not None]
        open_problem(ctx, [*group, ticket], ticket, work)
        return replace(work, action=Action.INCIDENT)


def _candidates(ctx: Context, ticket: Ticket, found: list[int]) -> list[Row[Any]]:
    """The candidates as the database has them now, locked in id order: plain rows, only a
    problem's group is loaded as objects.

    Requests this transaction changed are written first (the session's own changes must be
    read as changed); the new request's own words wait, to go out with its other changes in
    one UPDATE."""
    session = ctx.session
    if session.new or any(obj is not ticket for obj in session.dirty):
        session.flush()
    with session.no_autoflush:
        return list(session.execute(_CANDIDATES, {"ids": found}))


def _open_problem_of(ctx: Context, alike: list[Row[Any]]) -> Ticket | None:
    """The open problem the alike requests are (or belong to), if any.

    Without a flush: :func:`_candidates` has just written every other change, and the new
    request's own changes go out later with its joining, in one UPDATE."""
    with ctx.session.no_autoflush:
        for t in alike:
            ident = t.id if t.type == "problem" else t.problem_id
            if ident is None:
                continue
            problem = ticket_of(ctx, ident)
            if problem is not None and is_open_problem(problem):
                return problem
    return None


def make_incident(ctx: Context, ticket: Ticket, problem: Ticket, actor: str = "") -> None:
    ticket.type, ticket.problem_id = "incident", problem.id
    ticket.updated_at = ctx.clock()
    add_event(ctx.session, ticket.id, ctx.clock(), "incident", actor, problem=problem.id)


def join(ctx: Context, problem: Ticket, ticket: Ticket, work: Work) -> None:
    """A new request joins an open problem: told we know, counted for the lead and agents."""
    make_incident(ctx, ticket, problem)
    add_event(ctx.session, problem.id, ctx.clock(), "incident-joined", ticket=ticket.id)
    tell.known_ack(ctx, ticket, problem, work)
    count = tell.incident_count(ctx, problem)
    if count >= 2 * (problem.incident_told or 0):
        tell.lead(ctx, problem, update=True)
    tell.digest_if_due(ctx, problem)
    log.info("request #%d joins problem #%d (%d incidents)", ticket.id, problem.id, count)


def _subject(group: list[Ticket]) -> str:
    subjects = Counter(t.subject.strip() for t in group if t.subject.strip())
    return subjects.most_common(1)[0][0] if subjects else "Many alike requests"


def new_problem(ctx: Context, subject: str, fingerprint: str | None) -> Ticket:
    """A request of type problem, kept by the desk (its requester is the lead or the desk)."""
    now, desk = ctx.clock(), ctx.config.desk
    problem = Ticket(
        id=next_number(ctx.session),
        subject=subject[:1000],
        requester=desk.lead or desk.address,
        requester_name="",
        status="new",
        type="problem",
        priority="high",
        language=desk.language,
        created_at=now,
        updated_at=now,
        status_since=now,
        fingerprint=fingerprint,
        incident_told=0,
        digest_sent_at=now,
    )
    set_due(problem, ctx.config)
    ctx.session.add(problem)
    ctx.session.flush()
    tally.created(ctx.session, problem.id)
    ctx.cache[("ticket", problem.id)] = problem
    return problem


def open_problem(ctx: Context, group: list[Ticket], ticket: Ticket, work: Work | None) -> Ticket:
    """Open a problem for ``group``: its requests become incidents; the lead and the shift
    get one mail, the agents one notification, the request that made it the known-ack."""
    problem = new_problem(ctx, _subject(group), ticket.fingerprint)
    for t in group:
        make_incident(ctx, t, problem)
    numbers = [t.id for t in group]
    add_event(ctx.session, problem.id, ctx.clock(), "problem-opened", incidents=numbers)
    tell.known_ack(ctx, ticket, problem, work)
    tell.lead(ctx, problem, update=False)
    tell.agents_problem(ctx, problem)
    log.info("problem #%d opened for requests %s", problem.id, numbers)
    return problem


def answer_targets(ctx: Context, ticket: Ticket, agent: str, solved: bool) -> list[Ticket]:
    """Who an agent's answer on ``ticket`` goes to: a problem's open incidents, each in its
    own thread (and, with ``#status solved``, each solved now); else the request itself."""
    if ticket.type != "problem":
        return [ticket]
    stmt = (
        select(Ticket)
        .where(Ticket.problem_id == ticket.id, Ticket.status != "closed")
        .where(Ticket.merged_into.is_(None))
        .order_by(Ticket.id)
        .with_for_update()
    )
    members = list(ctx.session.scalars(stmt))
    if not members:
        return [ticket]
    now = ctx.clock()
    for t in members:
        old = t.status
        if solved:
            change_status(t, Status.SOLVED, now, ctx.config.clock)
        elif old in ("new", "pending", "solved"):
            change_status(t, Status.OPEN, now, ctx.config.clock)
        t.first_response_at = t.first_response_at or now
        t.assignee = t.assignee or agent
        add_event(
            ctx.session,
            t.id,
            ctx.clock(),
            "problem-answer",
            agent,
            problem=ticket.id,
            status=[old, t.status],
        )
    if solved:
        ticket.survey_due_at = None  # the customers get their own surveys
    return members
