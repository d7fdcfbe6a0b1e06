"""Queueing outgoing mail: the outbox row and its message row, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from maild.replies.compose import Outgoing, build, clean_header
from maild.store.models import Message, Outbox


def auto_replies_since(session: Session, address: str, since: datetime) -> int:
    """How many automatic mails went (or are going) to ``address`` since ``since``."""
    stmt = select(func.count(Outbox.id)).where(
        Outbox.rate_key == address.lower(), Outbox.created_at >= since
    )
    return int(session.scalar(stmt) or 0)


def may_auto_reply(session: Session, address: str, now: datetime, per_hour: int) -> bool:
    return auto_replies_since(session, address, now - timedelta(hours=1)) < per_hour


def enqueue(
    session: Session,
    out: Outgoing,
    *,
    ticket_id: int | None,
    kind: str,
    message_kind: str = "system",
    automatic: bool = True,
) -> Outbox:
    """Queue ``out``; it is sent only if the surrounding transaction commits."""
    recipients = [clean_header(a, "recipient") for a in (*out.to, *out.cc)]
    raw = build(out)
    row = Outbox(
        ticket_id=ticket_id,
        kind=kind,
        envelope_from=clean_header(out.sender, "envelope sender"),
        recipients=",".join(recipients),
        rate_key=out.to[0].lower() if automatic and out.to else None,
        message_id=out.message_id,
        raw=raw,
        state="queued",
        attempts=0,
        next_attempt_at=out.date,
        created_at=out.date,
    )
    session.add(row)
    session.add(
        Message(
            ticket_id=ticket_id,
            direction="out",
            kind=message_kind,
            from_addr=out.sender,
            from_name=out.sender_name,
            to_addrs=",".join(out.to),
            cc_addrs=",".join(out.cc),
            subject=out.subject,
            message_id=out.message_id,
            in_reply_to=out.in_reply_to,
            text=out.text,
            html=out.html,
            created_at=out.date,
            note=kind,
        )
    )
    return row
