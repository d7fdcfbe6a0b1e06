"""The `maild` command: run, init, deliver, tickets, show, quarantine."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from sqlalchemy.exc import DBAPIError

from maild.cli import clock as cli_clock
from maild.cli import kb as cli_kb
from maild.cli import ops as cli_ops
from maild.config import Config, load
from maild.core.errors import (
    CannotCreate,
    CannotListen,
    ConfigError,
    RejectedMessage,
    TemporaryFailure,
    UnsafeStorage,
)
from maild.ingest.accept import check_acceptable, open_queue, store_raw, strip_mbox_line
from maild.ops import views
from maild.pipeline.related import incident_fields
from maild.pipeline.runner import Pipeline
from maild.store.db import Database, sqlite_path
from maild.store.migrate import ensure_schema, upgrade
from maild.store.models import Inbound, Ticket

log = logging.getLogger("maild")

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_TEMPFAIL, EX_CONFIG = 0, 64, 65, 66, 75, 78
EX_CANTCREAT = 73


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 64 (EX_USAGE), as the README says."""

    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: usage error: {message} (see {self.prog} --help)\n")


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def _open(config: Config) -> Database:
    return Database(config.storage_url)


def cmd_init(config: Config, _args: argparse.Namespace) -> int:
    db = _open(config)
    upgrade(db)
    print(f"maild: schema is up to date at {db.engine.url.render_as_string(hide_password=True)}")
    return EX_OK


def cmd_run(config: Config, _args: argparse.Namespace) -> int:
    from maild.daemon import Daemon

    try:
        asyncio.run(Daemon(config).serve_forever())
    except CannotListen as exc:  # busy: another maild, or the old one still stopping
        print(f"maild: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if exc.in_use else EX_CANTCREAT
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"maild: cannot create or write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EX_CANTCREAT
    return EX_OK


def _database_error(config: Config, exc: DBAPIError) -> int:
    """One line for a database error that reached the top, naming a SQLite file's path."""
    reason = str(exc.orig or exc).splitlines()[0]
    path = sqlite_path(config.storage_url) if config.storage_url.startswith("sqlite") else None
    if path is None:
        print(f"maild: database error: {reason}", file=sys.stderr)
        return EX_TEMPFAIL
    print(f"maild: database {path.resolve()}: {reason}", file=sys.stderr)
    cannot_write = any(w in reason for w in ("unable to open", "readonly", "read-only"))
    return EX_CANTCREAT if cannot_write else EX_TEMPFAIL


def cmd_deliver(config: Config, args: argparse.Namespace) -> int:
    raw = strip_mbox_line(sys.stdin.buffer.read(config.smtp.max_message_size + 1))
    try:
        check_acceptable(raw, config.smtp.max_message_size)
        db = _open(config)
        ensure_schema(db)
        queue = open_queue(db)
        stored = store_raw(
            queue,
            raw,
            source="pipe",
            envelope_from=args.sender,
            recipients=args.recipient or (),
            max_size=config.smtp.max_message_size,
        )
    except RejectedMessage as exc:
        print(f"maild: rejected: {exc}", file=sys.stderr)
        return EX_DATAERR
    except (TemporaryFailure, DBAPIError, OSError) as exc:
        print(f"maild: temporary failure: {exc}".splitlines()[0], file=sys.stderr)
        return EX_TEMPFAIL
    # Stored durably: from here on, a failure only delays processing (the daemon picks it up).
    try:
        if not stored.duplicate:
            Pipeline(config, db, queue=queue).process(ids=[stored.ident])
    except Exception as exc:  # processing is retried later; the message is safe
        log.warning("deliver: queued as %s, processing deferred: %s", stored.queue_id, exc)
    finally:
        queue.dispose()
    return EX_OK


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    db = _open(config)
    with db.session() as s:
        ticket = s.get(Ticket, args.number)
        if ticket is None:
            print(f"maild: no request #{args.number}", file=sys.stderr)
            return EX_NOINPUT
        data = views.ticket_detail(s, ticket)
        data.update(incident_fields(s, ticket, config))  # problem, incidents, merged_into, related
    if args.json:
        _print_json(data)
        return EX_OK
    print(f"#{data['id']} [{data['status']}] {data['subject']}")
    print(
        f"requester: {data['requester']}  type: {data['type']}  priority: {data['priority']}"
        f"  due: {data['due_at']}  cc: {', '.join(data['cc']) or '-'}"
    )
    if data["undeliverable"]:
        print(f"undeliverable (a bounce named them): {', '.join(data['undeliverable'])}")
    for m in data["messages"]:
        print(f"\n--- {m['direction']} {m['kind']} {m['created_at']} from {m['from']}")
        print(m["text"])
    print("\nhistory:")
    for e in data["events"]:
        print(f"  {e['at']} {e['kind']} {e['actor']} {json.dumps(e['detail'], ensure_ascii=False)}")
    return EX_OK


def cmd_quarantine(config: Config, args: argparse.Namespace) -> int:
    db = _open(config)
    if args.action == "list":
        with db.session() as s:
            rows = views.quarantine(s)
        if args.json:
            _print_json(rows)
        for r in [] if args.json else rows:
            print(
                f"{r['id']:<7} {r['received_at']} {r['size']:>9} {r['from'][:30]:<30} {r['error']}"
            )
        return EX_OK
    if args.id is None:
        print("maild: quarantine show/retry need an ID", file=sys.stderr)
        return EX_USAGE
    return _quarantine_one(config, db, args)


def _quarantine_one(config: Config, db: Database, args: argparse.Namespace) -> int:
    with db.session() as s:
        row = s.get(Inbound, args.id)
        if row is None or row.state != "quarantined":
            print(f"maild: no quarantined message {args.id}", file=sys.stderr)
            return EX_NOINPUT
        info, raw = views.inbound_view(row), row.raw
    if args.action == "show":
        if args.json:
            _print_json(info)
        else:
            print(
                f"id: {info['id']}\nreason: {info['error']}\nfrom: {info['from']}\n"
                f"subject: {info['subject']}\nreceived: {info['received_at']}\n"
            )
            sys.stdout.flush()
            sys.stdout.buffer.write(raw)
        return EX_OK
    queue = open_queue(db)
    try:  # back into the queue, the worker deaths counted against it forgotten
        ident = queue.retry(args.id)
        if ident is not None:
            Pipeline(config, db, queue=queue).process(ids=[ident])
    finally:
        queue.dispose()
    with db.session() as s:
        row = s.get(Inbound, args.id)
        assert row is not None
        if row.state == "quarantined":
            print(f"maild: message {args.id} quarantined again: {row.error}", file=sys.stderr)
            return EX_DATAERR
    print(f"maild: message {args.id} processed")
    return EX_OK


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="maild", description="A help desk that lives in email.")
    p.add_argument(
        "--config",
        default=os.environ.get("MAILD_CONFIG", "./config.toml"),
        help="path to config.toml (default ./config.toml, env MAILD_CONFIG)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug lines")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create or upgrade the schema")
    sub.add_parser("run", help="run the daemon")
    d = sub.add_parser("deliver", help="store one message from stdin (MTA pipe)")
    d.add_argument("--sender", "-f", default=None, help="envelope sender")
    d.add_argument("recipient", nargs="*", help="envelope recipients")
    s = sub.add_parser("show", help="show one request")
    s.add_argument("number", type=int)
    s.add_argument("--json", action="store_true")
    q = sub.add_parser("quarantine", help="messages that failed a step")
    q.add_argument("action", choices=("list", "show", "retry"))
    q.add_argument("id", type=int, nargs="?")
    q.add_argument("--json", action="store_true")
    cli_clock.add_parsers(sub)
    cli_ops.add_parsers(sub)
    cli_kb.add_parsers(sub)
    return p


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "init": cmd_init,
    "run": cmd_run,
    "deliver": cmd_deliver,
    "show": cmd_show,
    "quarantine": cmd_quarantine,
    "sweep": cli_clock.cmd_sweep,
    "stats": cli_clock.cmd_stats,
    **cli_ops.COMMANDS,
    **cli_kb.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.command == "run" else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per command
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per job run
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "deliver" else EX_CONFIG
    try:
        code = COMMANDS[args.command](config, args)
        sys.stdout.flush()  # here, where a closed pipe can still be told apart
        return code
    except BrokenPipeError:
        # `maild tickets --json | head`: the reader has what it wanted; end quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_OK
    except TemporaryFailure as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except CannotCreate as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "deliver" else EX_CANTCREAT
    except UnsafeStorage as exc:  # a server or hook below FULL / on: fix it, then start
        print(f"maild: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "deliver" else EX_CONFIG
    except DBAPIError as exc:
        return _database_error(config, exc)


if __name__ == "__main__":
    sys.exit(main())
