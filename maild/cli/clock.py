"""The clock's commands: `maild sweep [--now ISO-8601]` and `maild stats [--json]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from maild.config import Config
from maild.core.clock import as_utc, system_clock
from maild.ops.stats import desk_stats
from maild.scheduler.jobs import run_all
from maild.store.db import Database
from maild.store.migrate import ensure_schema

log = logging.getLogger(__name__)

EX_OK, EX_USAGE = 0, 64


def parse_now(value: str | None) -> datetime:
    """The instant to act at: ISO-8601, a naive one taken as UTC; now when not given."""
    if not value:
        return system_clock()
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {value!r}") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else as_utc(at)


def now_arg(value: str | None) -> datetime | None:
    """``--now`` read by :func:`parse_now`; a bad value is reported on stderr (None)."""
    try:
        return parse_now(value)
    except argparse.ArgumentTypeError as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return None


def add_parsers(sub: Any) -> None:
    """Register `sweep` and `stats` on the `maild` sub-command parser."""
    sw = sub.add_parser("sweep", help="run every due sweep once and exit (cron, tests)")
    sw.add_argument("--now", default=None, help="act as if it were this ISO-8601 time")
    sw.add_argument("--json", action="store_true")
    st = sub.add_parser("stats", help="counts, first-response times, SLA compliance, CSAT")
    st.add_argument("--json", action="store_true")


def cmd_sweep(config: Config, args: argparse.Namespace) -> int:
    now = now_arg(args.now)
    if now is None:
        return EX_USAGE
    db = Database(config.storage_url)
    ensure_schema(db)
    try:
        # Judged at --now; the mail it queues is dated now and due at once (not at --now).
        done = run_all(db, config, now, dated=system_clock())
    finally:
        db.dispose()
    if args.json:
        json.dump({"now": now.isoformat(), "done": done}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(" ".join(f"{name}={count}" for name, count in done.items()))
    return EX_OK


def _print_stats(data: dict[str, Any]) -> None:
    def line(title: str, counts: dict[str, int]) -> None:
        print(f"{title:<12}" + "  ".join(f"{k} {v}" for k, v in counts.items()))

    print(f"requests    {data['requests']}")
    line("status", data["by_status"])
    line("type", data["by_type"])
    line("priority", data["by_priority"])
    fr, sla, csat = data["first_response"], data["sla"], data["csat"]
    print(
        f"first reply median {fr['median_hours']} h, p90 {fr['p90_hours']} h "
        f"(business: {fr['median_business_hours']} h, {fr['p90_business_hours']} h; "
        f"{fr['count']} answered)"
    )
    print(f"sla         {sla['compliance_pct']}% met ({sla['met']} met, {sla['missed']} missed)")
    print(f"csat        {csat['csat_pct']}% good ({csat['good']} good, {csat['bad']} bad)")


def cmd_stats(config: Config, args: argparse.Namespace) -> int:
    db = Database(config.storage_url)
    ensure_schema(db)
    try:
        with db.session() as s:
            data = desk_stats(s, config.hours, system_clock())
    finally:
        db.dispose()
    if args.json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        _print_stats(data)
    return EX_OK
