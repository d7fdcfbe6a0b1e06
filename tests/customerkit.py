"""Helpers for the customer-side tests (issue 14): a desk with titles, agents who answer."""

from __future__ import annotations

import re
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from clockkit import deliver_at, mail, mapping, outbox
from conftest import make_mail

from maild.config import Config, from_mapping
from maild.store.db import Database
from maild.store.models import Outbox

DEPARTMENTS = [
    {"name": "billing", "email": "billing@example.com"},
    {"name": "tech", "email": "tech@example.com", "title": "технического инженера"},
    {"name": "apps", "email": "apps@example.com", "title": "the app developers"},
]
PAGE = re.compile(r"http://desk\.example\.com(/r/\d+/\d+\.[A-Za-z0-9_-]{43})")
RU_BODY = "Здравствуйте! Принтер совсем ничего не печатает, помогите."


def desk_config(db_url: str, tmp_path: Path, **sections: dict[str, Any]) -> Config:
    data = mapping(db_url, tmp_path, **sections)
    data["departments"] = DEPARTMENTS
    return from_mapping(data, tmp_path)


STAFF_KINDS = {
    "notify",
    "escalation",
    "sla_warning",
    "sla_breach",
    "hold_department_reminder",
    "bad_rating",
    "command-error",
}


def customer_mails(db: Database, number: int, kind: str | None = None) -> list[Outbox]:
    """What the requester (and CCs) of request ``number`` received, oldest first."""
    return [r for r in outbox(db, kind) if r.ticket_id == number and r.kind not in STAFF_KINDS]


def plain(row: Outbox) -> str:
    """The text part exactly as the customer's mail client shows it."""
    part = mail(row).get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def html(row: Outbox) -> str:
    part = mail(row).get_body(("html",))
    assert part is not None, "no HTML part"
    return str(part.get_content())  # type: ignore[attr-defined]


def words(text: str) -> str:
    """Text with its line breaks folded: what a reader reads."""
    return " ".join(text.split())


def notification(db: Database, number: int, agent: str = "anna@example.com") -> EmailMessage:
    rows = [r for r in outbox(db, "notify") if r.ticket_id == number and r.recipients == agent]
    assert rows, f"no notification to {agent} on #{number}"
    return mail(rows[-1])


def agent_says(
    db: Database, config: Config, number: int, body: str, at: datetime, **kw: Any
) -> None:
    """Anna answers the notification of request ``number`` from her mail client."""
    note = notification(db, number)
    mid = note["Message-ID"]
    raw = make_mail(
        f"Re: {note['Subject']}",
        sender="anna@example.com",
        body=body,
        extra=f"In-Reply-To: {mid}\r\nReferences: {mid}\r\n",
        **kw,
    )
    deliver_at(db, config, raw, at)
