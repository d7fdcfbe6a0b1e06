"""Mail the clock sends on its own: to the customer, to agents, to a department or the lead."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import Clock, fixed_clock
from maild.replies.compose import Outgoing, new_message_id
from maild.replies.kinds import mail, staff_mail
from maild.replies.outbox import enqueue
from maild.replies.render import Renderer
from maild.store.models import Ticket
from maild.threading.tags import tagged_subject

log = logging.getLogger(__name__)

# What a subject says before the request's tag, per template and language.
SUBJECTS: dict[str, dict[str, str]] = {
    "survey": {"en": "How did we do?", "ru": "Оцените нашу работу:"},
    "pending_reminder": {"en": "We are waiting for your reply:", "ru": "Ждём вашего ответа:"},
    "pending_autosolved": {"en": "Request solved:", "ru": "Запрос решён:"},
    "hold_customer": {"en": "Still in progress:", "ru": "Работа продолжается:"},
    "hold_department_reminder": {"en": "Reminder:", "ru": "Напоминание:"},
    "sla_warning": {"en": "SLA warning:", "ru": "Срок ответа истекает:"},
    "sla_breach": {"en": "SLA breached:", "ru": "Срок ответа нарушен:"},
    "sla_delay": {"en": "Our answer is delayed:", "ru": "Ответ задерживается:"},
    "bad_rating": {"en": "Bad rating:", "ru": "Плохая оценка:"},
}


# Reminders count among the automatic mails an address may get per hour (the breaker); a survey
# or a resolution comes once per solve cycle and is left to the per-request limit.
REMINDERS = frozenset(
    {
        "pending_reminder",
        "hold_customer",
        "hold_department_reminder",
        "sla_warning",
        "sla_breach",
        "sla_delay",
    }
)


def staff_for(ticket: Ticket, config: Config) -> tuple[str, ...]:
    """The assignee, or every agent when nobody has the request."""
    if ticket.assignee:
        return (ticket.assignee,)
    return tuple(a.email for a in config.agents)


@dataclass(frozen=True)
class SweepContext:
    """A MailContext for mail that no inbound message caused: a sweep, a web request."""

    session: Session
    config: Config
    renderer: Renderer
    clock: Clock


@dataclass(frozen=True)
class Notices:
    """Renders and queues scheduled mail in the caller's transaction (via replies.kinds)."""

    config: Config
    renderer: Renderer
    now: datetime  # the instant the sweep acts at (`maild sweep --now` may move it)
    dated: datetime | None = None  # Date: and due time of the mail, when not ``now``

    def subject(self, ticket: Ticket, template: str, language: str) -> str:
        label = SUBJECTS.get(template, {}).get(language, "")
        tagged = tagged_subject(self.config.desk.tag, ticket.id, ticket.subject)
        return f"{label} {tagged}".strip()

    def _ctx(self, session: Session) -> SweepContext:
        return SweepContext(session, self.config, self.renderer, fixed_clock(self.now))

    def _mail(
        self, session: Session, ticket: Ticket, to: str, template: str, **kw: Any
    ) -> Outgoing:
        out = mail(self._ctx(session), ticket, to=[to], template=template, **kw)
        return self._dated(out, ticket, template)

    def _dated(self, out: Outgoing, ticket: Ticket, template: str) -> Outgoing:
        """The sweep's subject label and, for a catch-up run, the date it was due."""
        return replace(
            out, subject=self.subject(ticket, template, out.language), date=self.dated or out.date
        )

    def to_customer(self, session: Session, ticket: Ticket, template: str, **context: Any) -> None:
        """One mail to the requester (and the request's CCs) in the request's language."""
        mid = new_message_id(self.config.desk.domain, f"{template.replace('_', '-')}.{ticket.id}")
        # The survey's links are the requester's own; other news goes to the CCs as well.
        cc = () if template == "survey" else tuple(c.email for c in ticket.ccs)
        context.setdefault("name", ticket.requester_name)
        out = self._mail(
            session,
            ticket,
            ticket.requester,
            template,
            message_id=mid,
            cc=cc,
            customer=True,
            **context,
        )
        automatic = template in REMINDERS
        enqueue(self._ctx(session), out, ticket_id=ticket.id, kind=template, automatic=automatic)

    def to_staff(
        self,
        session: Session,
        ticket: Ticket,
        recipients: Iterable[str],
        template: str,
        proof: str = "n",
        **context: Any,
    ) -> int:
        """One mail per agent, department or lead, each with a Message-ID signed for them.

        A reply to it proves its sender received it ("n": agent notification, "e": escalation).
        """
        sent = 0
        for rcpt in dict.fromkeys(r.lower() for r in recipients if r):
            out = staff_mail(self._ctx(session), ticket, rcpt, template, proof=proof, **context)
            out = self._dated(out, ticket, template)
            ctx, automatic = self._ctx(session), template in REMINDERS
            sent += enqueue(ctx, out, ticket_id=ticket.id, kind=template, automatic=automatic)
        if not sent:
            log.warning("request #%d: no one to send %s to (no agents?)", ticket.id, template)
        return sent
