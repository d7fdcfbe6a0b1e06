"""The circuit breaker every outgoing mail passes: per request, and automatic mail per address.

At most ``[limits] mails_per_request_hour`` mails about one request per hour, and at most
``[limits] auto_replies_per_hour`` automatic mails (acknowledgements, notifications, command
errors, reminders) to one address per hour; for the desk's own agents, departments and lead
that count is per request, so a busy desk's agents are never cut off. When a mail would pass
a limit, the breaker trips: the request gets a ``mail-held`` event, the ``[desk] lead`` gets
one mail naming the request and the address, and nothing more goes out about the request
until an agent acts on it (``release``, a minute or more after the trip) or the hour has
passed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select

from maild.config import Config
from maild.core.clock import as_utc
from maild.replies import tally
from maild.replies.compose import AUTO_GENERATED, Outgoing, new_message_id
from maild.replies.context import MailContext
from maild.replies.kinds import mail
from maild.store.events import MAILD, add_event
from maild.store.loaded import in_session
from maild.store.models import Outbox, Ticket

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
IN_FLIGHT = timedelta(minutes=1)  # agent mail this soon after a trip releases nothing
LEAD_KIND = "breaker"  # the outbox kind of the lead's mail
SUBJECTS = {"en": "Mail stopped:", "ru": "Почта остановлена:"}

_LEAD_TOLD = select(func.count(Outbox.id)).where(
    Outbox.kind == LEAD_KIND,
    Outbox.created_at >= bindparam("since"),
    or_(Outbox.ticket_id == bindparam("ticket"), Outbox.rate_key == bindparam("key")),
)


@dataclass(frozen=True)
class Trip:
    """Why mail about a request was stopped: the limit passed, and the address concerned."""

    reason: str
    address: str


def _count(ctx: MailContext, stmt: Select[Any], **params: object) -> int:
    return int(ctx.session.connection().execute(stmt, params).scalar() or 0)


def is_staff(config: Config, address: str) -> bool:
    """The desk's own people: their automatic mail is counted per request."""
    return (
        config.agent(address) is not None
        or config.department(address) is not None
        or address == (config.desk.lead or "").lower()
    )


def held(ticket: Ticket, now: datetime) -> bool:
    """The breaker has stopped this request's mail, less than an hour ago."""
    return ticket.mail_held_at is not None and as_utc(ticket.mail_held_at) + HOUR > now


def _since(ticket: Ticket, now: datetime) -> datetime:
    """Where this request's count starts: an hour ago, or when an agent last released it."""
    if ticket.mail_released_at is None:
        return now - HOUR
    return max(now - HOUR, as_utc(ticket.mail_released_at))


def check(
    ctx: MailContext, ticket: Ticket, mails: Sequence[Outgoing], automatic: bool
) -> Trip | None:
    """The limit ``mails`` would pass, or None when they may go.

    The counts are the transaction's (maild.replies.tally): read once, the rows it queues
    since added.
    """
    limits, now = ctx.config.limits, ctx.clock()
    # The request's count and, by rate key, each staff address's count on it.
    on_request = tally.on_request(ctx.session, ticket.id, _since(ticket, now))
    first = mails[0].to[0].lower() if mails and mails[0].to else ""
    if sum(on_request.values()) + len(mails) > limits.mails_per_request_hour:
        why = f"more than {limits.mails_per_request_hour} mails about request #{ticket.id}/hour"
        return Trip(why, first)
    if not automatic:
        return None
    for out in mails:
        address = out.to[0].lower() if out.to else ""
        if is_staff(ctx.config, address):
            sent = on_request.get(address, 0)
        else:
            sent = tally.to_address(ctx.session, address, now - HOUR)
        if sent >= limits.auto_replies_per_hour:
            why = f"more than {limits.auto_replies_per_hour} automatic mails to {address}/hour"
            return Trip(why, address)
    return None


@dataclass(frozen=True)
class Decision:
    """May the mails go; when the breaker trips just now, the lead's mail and its rate key."""

    ok: bool
    lead_mail: Outgoing | None = None
    lead_key: str = ""


def admit(
    ctx: MailContext,
    ticket_id: int,
    mails: Sequence[Outgoing],
    *,
    automatic: bool,
    kind: str,
) -> Decision:
    """Whether ``mails`` about request ``ticket_id`` may be queued now."""
    ticket = in_session(ctx.session, Ticket, ticket_id) or ctx.session.get(Ticket, ticket_id)
    if ticket is None or not mails:
        return Decision(True)
    if held(ticket, ctx.clock()):
        add_event(ctx.session, ticket_id, ctx.clock(), "mail-stopped", MAILD, stopped=kind)
        log.info("request #%d: mail held by the breaker, %s not sent", ticket_id, kind)
        return Decision(False)
    trip = check(ctx, ticket, mails, automatic)
    if trip is None:
        return Decision(True)
    return Decision(False, _trip(ctx, ticket, trip, kind), f"{LEAD_KIND}:{trip.address}")


def _trip(ctx: MailContext, ticket: Ticket, trip: Trip, kind: str) -> Outgoing | None:
    now, lead = ctx.clock(), ctx.config.desk.lead
    ticket.mail_held_at = now
    add_event(
        ctx.session,
        ticket.id,
        now,
        "mail-held",
        MAILD,
        reason=trip.reason,
        address=trip.address,
        stopped=kind,
    )
    log.warning(
        "request #%d: circuit breaker tripped (%s); no mail about it until an agent acts "
        "or an hour has passed; lead: %s",
        ticket.id,
        trip.reason,
        lead or "none configured",
    )
    told = _count(
        ctx, _LEAD_TOLD, ticket=ticket.id, key=f"{LEAD_KIND}:{trip.address}", since=now - HOUR
    )
    if not lead or told:
        return None
    out = mail(
        ctx,
        ticket,
        to=[lead],
        template="breaker",
        language=ctx.config.desk.language,
        message_id=new_message_id(ctx.config.desk.domain, f"breaker.{ticket.id}"),
        auto=AUTO_GENERATED,
        reason=trip.reason,
        address=trip.address,
        stopped=kind,
    )
    label = SUBJECTS.get(out.language, SUBJECTS["en"])
    return replace(out, subject=f"{label} {out.subject}")


def release(ctx: MailContext, ticket: Ticket, actor: str) -> None:
    """An agent acted on a held request: its mail flows again, counted from now.

    Only a held request is released: an agent's every mail resetting the count would let an
    autoresponder at the agent's mailbox that no rule recognises loop on for ever. A mail that
    arrives within ``IN_FLIGHT`` of the trip was on its way before it (an autoresponder's answer
    to the last notification) and releases nothing.
    """
    if ticket.mail_held_at is None:
        return
    now = ctx.clock()
    if now - as_utc(ticket.mail_held_at) < IN_FLIGHT:
        log.info(
            "request #%d: mail from %s came too soon after the breaker tripped", ticket.id, actor
        )
        return
    ticket.mail_held_at, ticket.mail_released_at = None, now
    add_event(ctx.session, ticket.id, now, "mail-released", actor)
    log.info("request #%d: %s acted on it; its mail flows again", ticket.id, actor)
