"""Queueing outgoing mail: the outbox row and its message row, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from maild.replies import breaker, tally
from maild.replies.compose import Outgoing, build, clean_header
from maild.replies.context import MailContext
from maild.replies.undeliverable import deliverable
from maild.store.direct import Statement
from maild.store.models import Message, Outbox
from maild.tickets.words import OutboxState

# On the driver (maild.store.direct): these run several times for every inbound message.
_OUTBOX_INSERT = Statement(insert(Outbox.__table__))  # type: ignore[arg-type]
_MESSAGE_INSERT = Statement(insert(Message.__table__))  # type: ignore[arg-type]


def auto_replies_since(session: Session, address: str, since: datetime) -> int:
    """How many automatic mails went (or are going) to ``address`` since ``since``: read
    once a transaction (maild.replies.tally)."""
    return tally.to_address(session, address, since)


def _queue(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert outbox rows; the transaction's tally counts them from now on."""
    _OUTBOX_INSERT.executemany(session, rows)
    tally.queued(session, rows)


def may_auto_reply(session: Session, address: str, now: datetime, per_hour: int) -> bool:
    return auto_replies_since(session, address, now - timedelta(hours=1)) < per_hour


def _outbox_row(out: Outgoing, ticket_id: int | None, kind: str, automatic: bool) -> dict[str, Any]:
    recipients = [clean_header(a, "recipient") for a in (*out.to, *out.cc)]
    return dict(
        ticket_id=ticket_id,
        kind=kind,
        envelope_from=clean_header(out.sender, "envelope sender"),
        recipients=",".join(recipients),
        rate_key=out.to[0].lower() if automatic and out.to else None,
        message_id=out.message_id,
        raw=build(out),
        state=OutboxState.QUEUED,
        attempts=0,
        next_attempt_at=out.date,
        created_at=out.date,
        claimed_until=None,
        last_error=None,
        sent_at=None,
    )


def _message_row(
    out: Outgoing, ticket_id: int | None, kind: str, message_kind: str
) -> dict[str, Any]:
    return dict(
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
        inbound_id=None,
    )


def enqueue(
    ctx: MailContext,
    out: Outgoing,
    *,
    ticket_id: int | None,
    kind: str,
    message_kind: str = "system",
    automatic: bool = True,
) -> bool:
    """Queue ``out``; it is sent only if the surrounding transaction commits.

    Every outgoing mail comes through here or ``enqueue_internal``, and so through the circuit
    breaker; returns False when the breaker stopped it.
    Plain INSERTs, not ORM objects: a request can cause several mails, and this is the hot path.
    The mail is also kept as an outgoing message of its request (history, threading).
    """
    if not _admitted(ctx, ticket_id, [out], automatic, kind):
        return False
    kept = deliverable(ctx.session, out)  # the message row keeps whom it was meant for
    row = _message_row(out, ticket_id, kind, message_kind)
    if kept is not None:
        _queue(ctx.session, [_outbox_row(kept, ticket_id, kind, automatic)])
    else:
        row["note"] = f"{kind}; not sent: every recipient is undeliverable"
    _MESSAGE_INSERT.execute(ctx.session, row)
    return kept is not None


def enqueue_internal(
    ctx: MailContext, mails: Sequence[Outgoing], *, ticket_id: int | None, kind: str
) -> bool:
    """Queue internal mail (agent notifications: automatic) in one statement; no message rows."""
    if not mails or not _admitted(ctx, ticket_id, mails, True, kind):
        return False
    _queue(ctx.session, [_outbox_row(out, ticket_id, kind, True) for out in mails])
    return True


def _admitted(
    ctx: MailContext,
    ticket_id: int | None,
    mails: Sequence[Outgoing],
    automatic: bool,
    kind: str,
) -> bool:
    """Ask the breaker; when it trips just now, queue its one mail to the lead."""
    if ticket_id is None:
        return True
    decision = breaker.admit(ctx, ticket_id, mails, automatic=automatic, kind=kind)
    if decision.lead_mail is not None:
        lead_mail = decision.lead_mail
        row = _outbox_row(lead_mail, ticket_id, breaker.LEAD_KIND, False)
        row["rate_key"] = decision.lead_key
        _queue(ctx.session, [row])
        message = _message_row(lead_mail, ticket_id, "breaker", "system")
        _MESSAGE_INSERT.execute(ctx.session, message)
    return decision.ok
