"""The morning digest: each agent's queue and the lead's summary, once a working day.

Due at ``[digest] at`` desk time on working days (``[hours]`` days, not holidays). A digest's
Message-ID is signed for its reader with the day as nonce, so it is the same on every run and
instance: the outbox's unique Message-ID keeps it to one a day, with no state of its own.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import as_utc, fixed_clock
from maild.ops.digest import desk_summary, previous_working_day, queue
from maild.replies.compose import AUTO_GENERATED, Outgoing
from maild.replies.kinds import staff_message_id
from maild.replies.outbox import enqueue
from maild.replies.render import Renderer, day_text
from maild.replies.scheduled import SweepContext
from maild.security.signing import board_url
from maild.store.db import Database
from maild.store.models import Outbox

log = logging.getLogger(__name__)

SUBJECTS = {
    "digest": {"en": "Your queue for {day}", "ru": "Ваша очередь на {day}"},
    "digest_lead": {"en": "Desk summary for {day}", "ru": "Сводка по службе на {day}"},
    "query": {"en": "Your list: {what}", "ru": "Ваш список: {what}"},
}


def due_day(config: Config, now: datetime) -> date | None:
    """The desk's day whose digest is due at ``now``, or None (off, a day off, too early)."""
    at = config.digest.at
    local = as_utc(now).astimezone(config.hours.zone)
    if at is None or not config.hours.is_working_day(local.date()) or local.time() < at:
        return None
    return local.date()


def digest_message_id(config: Config, to: str, template: str, day: date) -> str:
    nonce = hashlib.sha256(f"{template}|{day.isoformat()}".encode()).hexdigest()[:8]
    return staff_message_id(config, 0, to, nonce=nonce)


def desk_mail(
    config: Config, to: str, subject: str, message_id: str, text: str, now: datetime
) -> Outgoing:
    """A mail from the desk to one of its own people (digest, list answer)."""
    return Outgoing(
        sender_name=config.desk.name,
        sender=config.outbound.sender,
        to=(to,),
        subject=subject,
        text=text,
        html=None,
        message_id=message_id,
        loop_name=config.desk.address,
        language=config.desk.language,
        date=now,
        auto_submitted=AUTO_GENERATED,
        reply_to=config.desk.address,
    )


def _text(s: Session, config: Config, to: str, template: str, day: date, now: datetime) -> str:
    data: dict[str, Any]
    if template == "digest":
        data = {"mine": queue(s, "mine", to, config, now)}
        data["unassigned"] = queue(s, "unassigned", to, config, now)
    else:
        data = {"summary": desk_summary(s, config, now, day)}
    agent, lang = config.agent(to), config.desk.language
    return Renderer(config.desk.templates).render(
        lang,
        template,
        desk=config.desk,
        name=agent.name if agent else "",
        day=day_text(day, lang),
        since=day_text(previous_working_day(day, config), lang),
        config_warn=config.sla.warn_at,
        board_url=board_url(
            config.web.base_url, config.secret_key, to, now, config.web.board_hours
        ),
        board_hours=f"{config.web.board_hours:g}",
        **data,
    )[0]


def _send(db: Database, config: Config, to: str, template: str, day: date, now: datetime) -> bool:
    """Queue one digest unless it went already; True when it was queued now."""
    mid = digest_message_id(config, to, template, day)
    with db.session() as s:  # the usual answer, read without taking the write lock
        if s.scalar(select(Outbox.id).where(Outbox.message_id == mid)) is not None:
            return False
    subject = SUBJECTS[template][config.desk.language].format(
        day=day_text(day, config.desk.language)
    )
    with db.write() as s:
        out = desk_mail(config, to, subject, mid, _text(s, config, to, template, day, now), now)
        try:
            with s.begin_nested():
                ctx = SweepContext(s, config, Renderer(config.desk.templates), fixed_clock(now))
                enqueue(ctx, out, ticket_id=None, kind=template.replace("_", "-"), automatic=False)
        except IntegrityError:  # another instance queued it a moment ago
            return False
    return True


def sweep_digest(
    db: Database,
    config: Config,
    now: datetime,
    *,
    dated: datetime | None = None,  # noqa: ARG001 (every sweep's signature; see jobs.SWEEPS)
) -> int:
    """Every digest due at ``now`` that has not gone yet: one per agent, and the lead's.

    A digest is dated by its day, so ``dated`` changes nothing here."""
    day = due_day(config, now)
    if day is None:
        return 0
    readers = [(a.email, "digest") for a in config.agents]
    if config.desk.lead:
        readers.append((config.desk.lead, "digest_lead"))
    sent = sum(_send(db, config, to, template, day, as_utc(now)) for to, template in readers)
    if sent:
        log.info("digest for %s: %d mail(s) queued", day.isoformat(), sent)
    return sent
