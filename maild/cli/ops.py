"""Operator commands: `maild tickets`, `maild check-config`, `maild backup DEST`."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from maild.cli.clock import now_arg
from maild.config import Config
from maild.core.clock import as_utc, system_clock
from maild.ops import views
from maild.ops.backup import BackupError, backup
from maild.ops.queue import TicketFilter, age_text, find_tickets
from maild.pipeline.related import incident_counts
from maild.scheduler.digest import sweep_digest
from maild.store.db import Database
from maild.store.migrate import ensure_schema
from maild.store.models import Ticket
from maild.tickets.words import STATUSES

log = logging.getLogger(__name__)

EX_OK, EX_USAGE, EX_CANTCREAT, EX_CONFIG = 0, 64, 73, 78
COLUMNS = ("number", "status", "type", "priority", "assignee", "requester", "age", "due")
WIDTHS = (7, 8, 10, 8, 24, 30, 5, 16)


def add_parsers(sub: Any) -> None:
    """Register `tickets`, `check-config` and `backup` on the `maild` sub-command parser."""
    t = sub.add_parser("tickets", help="list requests (a header line, then one per line)")
    t.add_argument("--status", choices=STATUSES)
    t.add_argument("--assignee", help="an agent's address, or 'none' for unassigned")
    t.add_argument("--requester", help="the customer's address")
    t.add_argument("--since", help="created at or after this ISO-8601 date or time")
    t.add_argument("--search", help="words in the subject, the requester or the messages")
    t.add_argument("--limit", type=int, help="only the newest N")
    t.add_argument("--unattached", action="store_true", help="also list unattached mail")
    t.add_argument("--json", action="store_true")
    sub.add_parser("check-config", help="validate the config and exit 0 (or 78)")
    d = sub.add_parser("digest", help="send the morning digests due now (or at --now) and exit")
    d.add_argument("--now", default=None, help="act as if it were this ISO-8601 time")
    b = sub.add_parser("backup", help="a consistent copy of the SQLite database and its spool")
    b.add_argument("dest", help="a file name, or a directory to copy into")


def _since(value: str, config: Config) -> datetime:
    """An ISO-8601 date or time; without a zone it is desk time."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since: not an ISO-8601 time: {value!r}") from None
    return at.replace(tzinfo=config.hours.zone) if at.tzinfo is None else at


def _filter(args: argparse.Namespace, config: Config) -> TicketFilter:
    if args.limit is not None and args.limit < 1:
        raise argparse.ArgumentTypeError("--limit must be positive")
    since = _since(args.since, config) if args.since else None
    return TicketFilter(args.status, args.assignee, args.requester, since, args.search, args.limit)


def _row(t: Ticket, config: Config, now: Any) -> tuple[str, ...]:
    due = "-"
    if t.due_at is not None:
        due = as_utc(t.due_at).astimezone(config.hours.zone).strftime("%Y-%m-%d %H:%M")
    return (
        f"#{t.id}",
        t.status,
        t.type,
        t.priority,
        t.assignee or "-",
        t.requester,
        age_text(t.created_at, now),
        due,
    )


def _line(cells: tuple[str, ...]) -> str:
    return " ".join(c[:w].ljust(w) for c, w in zip(cells, WIDTHS, strict=True)).rstrip()


def cmd_tickets(config: Config, args: argparse.Namespace) -> int:
    try:
        wanted = _filter(args, config)
    except argparse.ArgumentTypeError as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return EX_USAGE
    db = Database(config.storage_url)
    now = system_clock()
    try:
        with db.session() as s:
            found = find_tickets(s, wanted)
            rows = [views.ticket_summary(t) for t in found]
            counts = incident_counts(s)
            for r in rows:  # a problem shows how many incidents it has
                r["incidents"] = counts.get(r["id"], 0) if r["type"] == "problem" else None
            lines = [
                _line(_row(t, config, now)) + _incidents(r)
                for t, r in zip(found, rows, strict=True)
            ]
            noise = views.unattached(s) if args.unattached else []
    finally:
        db.dispose()
    if args.json:
        data = {"tickets": rows, "unattached": noise} if args.unattached else rows
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return EX_OK
    print(_line(COLUMNS))
    for line in lines:
        print(line)
    for m in noise:
        print(f"  unattached {m['kind']:<10} {m['from']:<30} {m['subject'][:60]}")
    return EX_OK


def _incidents(row: dict[str, Any]) -> str:
    return f"  [problem: {row['incidents']} incidents]" if row["incidents"] is not None else ""


def cmd_check_config(config: Config, _args: argparse.Namespace) -> int:
    """The config was loaded and validated before this runs (an error exits 78 in main)."""
    templates = config.desk.templates
    if templates is not None and not templates.is_dir():
        print(
            f"maild: config error: desk.templates: no such directory {templates}", file=sys.stderr
        )
        return EX_CONFIG
    print(
        f"maild: config OK: {config.path} (desk {config.desk.address}, "
        f"{len(config.agents)} agent(s), {len(config.departments)} department(s))"
    )
    return EX_OK


def cmd_backup(config: Config, args: argparse.Namespace) -> int:
    try:
        done = backup(config.storage_url, Path(args.dest))
    except BackupError as exc:
        print(f"maild: backup: {exc}", file=sys.stderr)
        return EX_CONFIG if not config.storage_url.startswith("sqlite") else EX_CANTCREAT
    except (OSError, sqlite3.Error) as exc:  # one line, never a traceback
        print(f"maild: backup failed: {exc}".splitlines()[0], file=sys.stderr)
        return EX_CANTCREAT
    spool = f" and {done.spool}" if done.spool else ""
    print(f"maild: backup written to {done.database}{spool}")
    return EX_OK


def cmd_digest(config: Config, args: argparse.Namespace) -> int:
    now = now_arg(args.now)
    if now is None:
        return EX_USAGE
    db = Database(config.storage_url)
    try:
        ensure_schema(db)
        sent = sweep_digest(db, config, now)
    finally:
        db.dispose()
    print(f"digest={sent}")
    return EX_OK


COMMANDS = {
    "tickets": cmd_tickets,
    "check-config": cmd_check_config,
    "backup": cmd_backup,
    "digest": cmd_digest,
}
