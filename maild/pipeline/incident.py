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

from sqlalchemy import or_, select

from maild.clock import as_utc
from maild.pipeline import incident_mail as tell
from maild.pipeline.base import Context, Work
from maild.pipeline.records import next_number, set_due, ticket_of
from maild.store.events import add_event
from maild.store.models import Ticket
from maild.tickets.incidents import (
    MIN_WORDS,
    AlikeIndex,
    Entry,
    distinct_customers,
    jaccard,
    words,
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


def fingerprint_of(t: Ticket) -> frozenset[str]:
    return frozenset((t.fingerprint or "").split())


class Incident:
    name = "incident"

    def __init__(self) -> None:
        self.index = AlikeIndex(0.6)
        self.watermark = 0  # the highest request number read into the index

    def refresh(self, ctx: Context, since: datetime) -> None:
        """Read the requests numbered above the watermark into the index; forget old ones."""
        c = Ticket.__table__.c
        rows = ctx.session.execute(
            select(c.id, c.fingerprint, c.created_at, c.type, c.status).where(
                c.id > self.watermark,
                c.fingerprint.is_not(None),
                or_(c.created_at >= since, c.type == "problem"),
            )
        )
        for ident, text, stored, kind, status in rows:
            created = as_utc(stored)  # SQLite gives it back without the zone
            pinned = kind == "problem" and status not in DONE
            if pinned or created >= since:
                entry = Entry(int(ident), frozenset(text.split()), created, pinned)
                self.index.add(entry)
            self.watermark = max(self.watermark, int(ident))
        self.index.expire(since)

    def __call__(self, work: Work, ctx: Context) -> Work:
        if work.action != Action.CREATED or work.role != "customer" or work.ticket_id is None:
            return work
        assert work.parsed is not None
        ticket = ticket_of(ctx, work.ticket_id)
        assert ticket is not None
        mine = words(ticket.subject, work.parsed.text)
        if len(mine) < MIN_WORDS:
            return work
        ticket.fingerprint = " ".join(sorted(mine))
        cfg = ctx.config.incident
        if self.index.threshold != cfg.similarity:  # built for another config: start again
            self.index, self.watermark = AlikeIndex(cfg.similarity), 0
        self.refresh(ctx, ctx.clock() - timedelta(minutes=cfg.window_minutes))
        cap = max(MAX_CANDIDATES, 2 * cfg.threshold)  # enough to reach the threshold
        found = [i for i, _ in self.index.alike(mine) if i != ticket.id][:cap]
        ctx.cache[("alike", ticket.id)] = found  # best first: the notification's related list
        if not found:
            return work
        alike = self._alike_rows(ctx, ticket, found)
        problem = _open_problem_of(ctx, alike)
        if problem is not None:
            join(ctx, problem, ticket, work)
            return replace(work, action=Action.INCIDENT)
        group = [t for t in alike if t.type != "problem" and t.problem_id is None]
        group = [t for t in group if t.status != "closed" and t.merged_into is None]
        group.append(ticket)
        if distinct_customers(t.requester for t in group) < cfg.threshold:
            return work
        open_problem(ctx, group, ticket, work)
        return replace(work, action=Action.INCIDENT)

    def _alike_rows(self, ctx: Context, ticket: Ticket, found: list[int]) -> list[Ticket]:
        """The candidates as the database has them now, locked in id order, checked again."""
        stmt = select(Ticket).where(Ticket.id.in_(found)).order_by(Ticket.id).with_for_update()
        rows = list(ctx.session.scalars(stmt))
        mine, level = fingerprint_of(ticket), ctx.config.incident.similarity
        return [t for t in rows if jaccard(mine, fingerprint_of(t)) >= level]


def _open_problem_of(ctx: Context, alike: list[Ticket]) -> Ticket | None:
    """The open problem the alike requests are (or belong to), if any."""
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
