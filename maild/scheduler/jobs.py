"""The sweeps: each claims the requests that are due and queues their mail in one transaction."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import exists, or_
from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import as_utc
from maild.replies.outbox import may_auto_reply
from maild.replies.render import Renderer, when_text
from maild.replies.scheduled import Notices, staff_for
from maild.scheduler.claim import for_each_due
from maild.scheduler.elapsed import sla_progress
from maild.scheduler.incident_digest import sweep_incident_digest
from maild.security.signing import rating_url
from maild.store.db import Database
from maild.store.events import MAILD, add_event
from maild.store.models import Message, Ticket
from maild.tickets.delay import new_time
from maild.tickets.status import change_status
from maild.tickets.words import RATINGS, Status

log = logging.getLogger(__name__)


class Sweep(Protocol):
    """A sweep acts as if it were ``now``; the mail it queues is dated ``dated`` (default:
    ``now``), so `maild sweep --now LATER` queues mail that is due at once and dated today."""

    def __call__(
        self, db: Database, config: Config, now: datetime, *, dated: datetime | None = None
    ) -> int: ...


def _notices(config: Config, now: datetime, dated: datetime | None) -> Notices:
    return Notices(config, Renderer(config.desk.templates), now, dated)


def local_text(value: datetime, config: Config) -> str:
    """An instant as the desk reads it: "2026-11-30 12:30 MSK"."""
    return as_utc(value).astimezone(config.hours.zone).strftime("%Y-%m-%d %H:%M %Z")


def _status(s: Session, t: Ticket, new: Status, now: datetime, config: Config, why: str) -> None:
    change = change_status(t, new, now, config.clock)
    if change is not None:
        add_event(s, t.id, now, "status-changed", MAILD, old=change[0], new=change[1], reason=why)


def sweep_survey(
    db: Database, config: Config, now: datetime, *, dated: datetime | None = None
) -> int:
    """Solved for ``[survey] delay_hours`` and no survey yet: send it, with signed links."""
    now = as_utc(now)
    notices = _notices(config, now, dated)
    expires = now + timedelta(days=config.clock.survey_valid_days)
    web, key = config.web.base_url, config.secret_key

    def send(s: Session, t: Ticket) -> bool:
        urls = {r: rating_url(web, key, t.id, r, expires) for r in RATINGS}
        notices.to_customer(
            s, t, "survey", good_url=urls["good"], bad_url=urls["bad"], expires=expires
        )
        t.survey_sent_at = now
        add_event(s, t.id, now, "survey-sent", MAILD, expires=expires.isoformat())
        return True

    where = [
        Ticket.status == "solved",
        Ticket.survey_due_at <= now,
        Ticket.survey_sent_at.is_(None),
    ]
    return for_each_due(db, "survey", where, send)


def sweep_autoclose(
    db: Database,
    config: Config,
    now: datetime,
    *,
    dated: datetime | None = None,  # noqa: ARG001 (every sweep's signature; see SWEEPS)
) -> int:
    """Solved with no reply for ``[autoclose] days``: closed (a later reply is a follow-up)."""
    now = as_utc(now)
    since = now - timedelta(days=config.clock.autoclose_days)

    def close(s: Session, t: Ticket) -> bool:
        _status(s, t, Status.CLOSED, now, config, "autoclose")
        return True

    where = [Ticket.status == "solved", Ticket.status_since <= since]
    return for_each_due(db, "autoclose", where, close)


def sweep_pending(
    db: Database, config: Config, now: datetime, *, dated: datetime | None = None
) -> int:
    """Waiting for the customer: remind after ``remind_days``, solve after ``solve_days``."""
    now = as_utc(now)
    notices = _notices(config, now, dated)
    remind_at = now - timedelta(days=config.clock.pending_remind_days)
    solve_at = now - timedelta(days=config.clock.pending_solve_days)

    def act(s: Session, t: Ticket) -> bool:
        if t.status_since is not None and as_utc(t.status_since) <= solve_at:
            notices.to_customer(s, t, "pending_autosolved", days=config.clock.pending_solve_days)
            _status(s, t, Status.SOLVED, now, config, "no reply while pending")
            return True
        if t.reminded_at is not None:
            return False
        notices.to_customer(s, t, "pending_reminder", days=config.clock.pending_remind_days)
        t.reminded_at = now
        add_event(s, t.id, now, "pending-reminded", MAILD)
        return True

    where = [
        Ticket.status == "pending",
        Ticket.status_since <= max(remind_at, solve_at),
        or_(Ticket.reminded_at.is_(None), Ticket.status_since <= solve_at),
    ]
    return for_each_due(db, "pending", where, act)


def sweep_hold(
    db: Database, config: Config, now: datetime, *, dated: datetime | None = None
) -> int:
    """Waiting for a department: remind it and tell the customer once a day until it answers.

    The department's answer ends the reminders of that escalation (the agent reads it and
    decides); a new ``#escalate`` starts the hold, and its reminders, again.
    """
    now = as_utc(now)
    notices = _notices(config, now, dated)
    quiet = timedelta(hours=config.clock.hold_remind_hours)

    def remind(s: Session, t: Ticket) -> bool:
        dept = config.department(t.hold_department or "")
        to = (dept.email,) if dept else staff_for(t, config)
        if dept is None:
            log.warning("request #%d: on hold for unknown department %r", t.id, t.hold_department)
        since = local_text(t.status_since or now, config)
        notices.to_staff(s, t, to, "hold_department_reminder", proof="e", since=since)
        notices.to_customer(s, t, "hold_customer")
        t.reminded_at = now
        add_event(s, t.id, now, "hold-reminded", MAILD, department=t.hold_department, to=list(to))
        return True

    answered = exists().where(
        Message.ticket_id == Ticket.id,
        Message.kind == "department",
        Message.direction == "in",
        Message.created_at >= Ticket.status_since,
    )
    where = [
        Ticket.status == "hold",
        Ticket.status_since <= now - quiet,
        or_(Ticket.reminded_at.is_(None), Ticket.reminded_at <= now - max(quiet, timedelta(1))),
        ~answered,
    ]
    return for_each_due(db, "hold", where, remind)


def _sla_mail(s: Session, t: Ticket, notices: Notices, config: Config, progress: float) -> bool:
    now, did = notices.now, False
    context: dict[str, Any] = {
        "percent": round(progress * 100),
        "due": local_text(t.due_at or now, config),
        "created": local_text(t.created_at, config),
    }
    if progress >= config.sla.warn_at and t.sla_warned_at is None:
        to = staff_for(t, config)
        notices.to_staff(s, t, to, "sla_warning", **context)
        t.sla_warned_at, did = now, True
        add_event(s, t.id, now, "sla-warning", MAILD, to=list(to), percent=context["percent"])
    if progress >= 1.0 and t.sla_breached_at is None:
        to = (config.desk.lead,) if config.desk.lead else staff_for(t, config)
        notices.to_staff(s, t, to, "sla_breach", **context)
        t.sla_breached_at, did = now, True
        add_event(s, t.id, now, "sla-breach", MAILD, to=list(to), percent=context["percent"])
        if config.sla.tell_customer and t.type != "problem":  # a problem is the desk's own
            _tell_delay(s, t, notices, config)
    return did


def _tell_delay(s: Session, t: Ticket, notices: Notices, config: Config) -> None:
    """The promise is broken and no agent has answered: one apology with a new time."""
    now = notices.now
    limit = config.limits.auto_replies_per_hour
    if not may_auto_reply(s, t.requester, now, limit):  # the loop rules, as for the ack
        add_event(s, t.id, now, "delay-suppressed", MAILD, reason=f"{limit} automatic replies/hour")
        return
    later = new_time(t, config, now)
    text = when_text(later, now, t.language, config.desk.timezone)
    notices.to_customer(s, t, "sla_delay", new_time=text)
    add_event(s, t.id, now, "delay-told", MAILD, new_time=later.isoformat())


def sweep_sla(db: Database, config: Config, now: datetime, *, dated: datetime | None = None) -> int:
    """No agent reply yet: warn the assignee at ``[sla] warn_at``, tell the lead at 100 %."""
    now = as_utc(now)
    notices = _notices(config, now, dated)

    def progress(t: Ticket) -> float:
        assert t.due_at is not None
        return sla_progress(as_utc(t.created_at), as_utc(t.due_at), now, config.hours)

    def ready(t: Ticket) -> bool:
        return progress(t) >= (config.sla.warn_at if t.sla_warned_at is None else 1.0)

    def act(s: Session, t: Ticket) -> bool:
        return _sla_mail(s, t, notices, config, progress(t))

    where = [
        Ticket.status.not_in(("solved", "closed")),
        Ticket.first_response_at.is_(None),
        Ticket.due_at.is_not(None),
        Ticket.sla_breached_at.is_(None),
        Ticket.problem_id.is_(None),  # an incident: its problem carries the clock
    ]
    return for_each_due(db, "sla", where, act, ready)


# The order of the sweeps, reviewed in one place: close before surveying, so that a request
# solved long ago while the daemon was down is not sent a survey it can no longer answer.
SWEEPS: tuple[tuple[str, Sweep], ...] = (
    ("sla", sweep_sla),
    ("incident-digest", sweep_incident_digest),
    ("pending", sweep_pending),
    ("hold", sweep_hold),
    ("autoclose", sweep_autoclose),
    ("survey", sweep_survey),
)


def run_all(
    db: Database, config: Config, now: datetime, *, dated: datetime | None = None
) -> dict[str, int]:
    """Every sweep once at ``now`` (what `maild sweep` does); returns what each one did."""
    return {name: sweep(db, config, now, dated=dated) for name, sweep in SWEEPS}
