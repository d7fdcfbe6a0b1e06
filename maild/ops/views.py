"""Read-only views of the store as plain dicts, for the CLI (and later the web side)."""

from __future__ import annotations

import json
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.core.clock import as_utc
from maild.ingest.headers import decode_value
from maild.replies.undeliverable import undeliverable_among
from maild.store.models import Event, Inbound, Message, Ticket


def iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def ticket_summary(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "status": t.status,
        "type": t.type,
        "priority": t.priority,
        "subject": t.subject,
        "requester": t.requester,
        "requester_name": t.requester_name,
        "assignee": t.assignee,
        "category": t.category,
        "language": t.language,
        "parent_id": t.parent_id,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "due_at": iso(t.due_at),
        "first_response_at": iso(t.first_response_at),
        "rating": t.rating,
        "rating_comment": t.rating_comment,
    }


def message_view(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "direction": m.direction,
        "kind": m.kind,
        "from": m.from_addr,
        "from_name": m.from_name,
        "to": [a for a in m.to_addrs.split(",") if a],
        "cc": [a for a in m.cc_addrs.split(",") if a],
        "subject": m.subject,
        "message_id": m.message_id,
        "in_reply_to": m.in_reply_to,
        "text": m.text,
        "created_at": iso(m.created_at),
        "inbound_id": m.inbound_id,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in m.attachments
        ],
    }


def ticket_detail(s: Session, t: Ticket) -> dict[str, Any]:
    out = ticket_summary(t)
    out["cc"] = [c.email for c in t.ccs]
    out["undeliverable"] = sorted(undeliverable_among(s, [t.requester, *out["cc"]]))
    merged = s.scalars(select(Ticket.id).where(Ticket.merged_into == t.id))  # #merge: shown here
    ids = [t.id, *merged]
    msgs = s.scalars(select(Message).where(Message.ticket_id.in_(ids)).order_by(Message.id))
    out["messages"] = [message_view(m) for m in msgs]
    events = s.scalars(select(Event).where(Event.ticket_id == t.id).order_by(Event.id))
    out["events"] = [
        {"at": iso(e.at), "actor": e.actor, "kind": e.kind, "detail": json.loads(e.detail or "{}")}
        for e in events
    ]
    return out


def unattached(s: Session, limit: int = 200) -> list[dict[str, Any]]:
    stmt = (
        select(Message).where(Message.ticket_id.is_(None)).order_by(Message.id.desc()).limit(limit)
    )
    return [message_view(m) for m in s.scalars(stmt)]


def inbound_view(row: Inbound) -> dict[str, Any]:
    head = BytesHeaderParser(policy=compat32).parsebytes(row.raw[:65536])
    return {
        "id": row.id,
        "received_at": iso(row.received_at),
        "source": row.source,
        "state": row.state,
        "size": row.size,
        "envelope_from": row.envelope_from,
        "from": decode_value(head.get("From", "")),
        "subject": decode_value(head.get("Subject", "")),
        "message_id": row.message_id,
        "error": row.error,
        "attempts": row.attempts,
    }


def quarantine(s: Session) -> list[dict[str, Any]]:
    rows = s.scalars(select(Inbound).where(Inbound.state == "quarantined").order_by(Inbound.id))
    return [inbound_view(r) for r in rows]
