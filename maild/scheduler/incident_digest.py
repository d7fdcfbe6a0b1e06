"""Sweep "incident-digest": the agents' digest of the incidents that joined a problem since
the last one, at most one per `[incident] digest_minutes`."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased

from maild.config import Config
from maild.core.clock import as_utc, fixed_clock
from maild.pipeline.incident_mail import send_digest
from maild.replies.render import Renderer
from maild.replies.scheduled import SweepContext
from maild.scheduler.claim import for_each_due
from maild.store.db import Database
from maild.store.events import MAILD, add_event
from maild.store.models import Ticket

log = logging.getLogger(__name__)


def sweep_incident_digest(
    db: Database,
    config: Config,
    now: datetime,
    *,
    dated: datetime | None = None,  # noqa: ARG001 (every sweep's signature; see jobs.SWEEPS)
) -> int:
    now = as_utc(now)
    renderer = Renderer(config.desk.templates)
    member = aliased(Ticket)
    joined = exists(
        select(member.id).where(
            member.problem_id == Ticket.id, member.created_at > Ticket.digest_sent_at
        )
    )
    where = [
        Ticket.type == "problem",
        Ticket.status.not_in(("solved", "closed")),
        Ticket.digest_sent_at <= now - timedelta(minutes=config.incident.digest_minutes),
        joined,
    ]

    def send(s: Session, t: Ticket) -> bool:
        sent = send_digest(SweepContext(s, config, renderer, fixed_clock(now)), t, now)
        if sent:
            add_event(s, t.id, now, "incident-digest", MAILD, agents=sent)
        return bool(sent)

    return for_each_due(db, "incident-digest", where, send)
