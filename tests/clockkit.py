"""Helpers for the clock tests: requests at a frozen time, status set-up, outbox reading, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from conftest import config_mapping, make_mail
from sqlalchemy import select

from maild.config import Config, from_mapping
from maild.core.clock import fixed_clock
from maild.ingest.accept import store_raw
from maild.pipeline.runner import Pipeline
from maild.store.db import Database
from maild.store.models import Event, Outbox, Ticket
from maild.tickets.status import change_status

MSK = ZoneInfo("Europe/Moscow")
DEPARTMENTS = [{"name": "billing", "email": "billing@example.com"}]


def msk(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A desk-local (Moscow) wall-clock time, as an aware UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=MSK).astimezone(UTC)


def mapping(db_url: str, tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    data = config_mapping(db_url, tmp_path, **sections)
    data["departments"] = DEPARTMENTS
    data["desk"]["lead"] = "lead@example.com"
    data["web"]["base_url"] = "http://desk.example.com"
    return data


def build_config(db_url: str, tmp_path: Path, **sections: dict[str, Any]) -> Config:
    return from_mapping(mapping(db_url, tmp_path, **sections), tmp_path)


def deliver_at(db: Database, config: Config, raw: bytes, at: datetime) -> None:
    """One mail through the real pipeline with the clock at ``at``."""
    stored = store_raw(db, raw, source="test", envelope_from=None)
    Pipeline(config, db, clock=fixed_clock(at)).process(ids=[stored.ident])


def create_at(
    db: Database, config: Config, at: datetime, subject: str = "Printer is broken", **kw: Any
) -> int:
    """A customer's new request, run through the real pipeline with the clock at ``at``."""
    deliver_at(db, config, make_mail(subject, **kw), at)
    with db.session() as s:
        return int(s.scalars(select(Ticket.id).order_by(Ticket.id.desc())).first() or 0)


def set_status(
    db: Database, config: Config, ticket_id: int, status: str, at: datetime, **kw: Any
) -> None:
    with db.write() as s:
        ticket = s.get(Ticket, ticket_id)
        assert ticket is not None
        change_status(ticket, status, at, config.clock, **kw)


def update(db: Database, ticket_id: int, **values: Any) -> None:
    with db.write() as s:
        ticket = s.get(Ticket, ticket_id)
        assert ticket is not None
        for name, value in values.items():
            setattr(ticket, name, value)


def ticket(db: Database, ticket_id: int) -> Ticket:
    with db.session() as s:
        t = s.get(Ticket, ticket_id)
        assert t is not None
        return t


def outbox(db: Database, kind: str | None = None) -> list[Outbox]:
    stmt = select(Outbox).order_by(Outbox.id)
    if kind:
        stmt = stmt.where(Outbox.kind == kind)
    with db.session() as s:
        return list(s.scalars(stmt))


def events(db: Database, ticket_id: int, kind: str | None = None) -> list[Event]:
    stmt = select(Event).where(Event.ticket_id == ticket_id).order_by(Event.id)
    if kind:
        stmt = stmt.where(Event.kind == kind)
    with db.session() as s:
        return list(s.scalars(stmt))


def mail(row: Outbox) -> EmailMessage:
    msg = message_from_bytes(row.raw, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def text(row: Outbox) -> str:
    part = mail(row).get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_toml(data: dict[str, Any], path: Path) -> Path:
    """Enough TOML for a maild config: tables of scalars and arrays of tables."""
    lines: list[str] = []
    for name, section in data.items():
        tables = section if isinstance(section, list) else [section]
        for table in tables:
            lines.append(f"[[{name}]]" if isinstance(section, list) else f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def maild(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
