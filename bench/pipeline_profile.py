#!/usr/bin/env python3
"""CPU cost of the pipeline alone, in this process, under cProfile: no SMTP, no sender.

    .venv/bin/python bench/pipeline_profile.py [--messages 1000] [--config config.toml] [--top 40]
        [--plain] [--dump FILE] [--alike-share PCT]

Stores the benchmark's mix (bench/mailgen.py: new requests, then replies to them by tag) in a
throw-away SQLite database with ``store_raw``, then runs ``Pipeline.process`` until nothing is
pending and prints milliseconds of CPU per message and the functions that cost the most.
``--plain`` measures without cProfile (its overhead roughly doubles SQLAlchemy-heavy code);
``--dump`` keeps the raw profile for pstats.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mailgen import MailFactory, add_alike_share
from sqlalchemy import event

from maild.config import from_mapping
from maild.ingest.accept import store_raw
from maild.pipeline.runner import Pipeline, drain
from maild.store.db import Database
from maild.store.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent


def _numbers(db: Database, message_ids: list[str]) -> dict[str, int]:
    """The request number each first mail got (problems take numbers too, so the numbers
    cannot be counted on the client's side)."""
    found: dict[str, int] = {}
    with db.engine.connect() as conn:
        for i in range(0, len(message_ids), 500):
            chunk = message_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.exec_driver_sql(
                "SELECT message_id, ticket_id FROM messages WHERE direction = 'in' "
                f"AND message_id IN ({marks})",
                tuple(chunk),
            )
            found.update({mid: int(tid) for mid, tid in rows if tid is not None})
    return found


def _incidents(db: Database) -> str:
    """How many customers' requests joined problems (issue 12), for the mail's likeness."""
    with db.engine.connect() as conn:
        try:
            requests, joined, problems = conn.exec_driver_sql(
                "SELECT SUM(type != 'problem'), SUM(problem_id IS NOT NULL), "
                "SUM(type = 'problem') FROM tickets"
            ).one()
        except Exception:  # a tree from before issue 12 has no problem_id
            return "no incident columns (a tree from before issue 12)"
    share = 100 * (joined or 0) / max(requests or 0, 1)
    return f"{requests} requests, {joined} joined {problems} problems ({share:.0f} %)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--config", default=str(REPO / "config.toml"))
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--sort", default="cumulative")
    add_alike_share(p)
    p.add_argument("--plain", action="store_true", help="no cProfile: the CPU time as it is")
    p.add_argument("--dump", help="also write the raw cProfile data here (for pstats/snakeviz)")
    p.add_argument(
        "--statements", action="store_true", help="count the SQL statements run, by their text"
    )
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="maild-prof-"))
    data = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    data["storage"] = {"url": f"sqlite:///{work / 'maild.db'}"}
    data["outbound"] = {**data.get("outbound", {}), "url": f"maildir:{work / 'outbox'}"}
    data.setdefault("desk", {}).pop("templates", None)
    config = from_mapping(data, REPO)
    db = Database(config.storage_url)
    upgrade(db)
    pipeline = Pipeline(config, db)

    factory = MailFactory("prof", config.desk.address, config.desk.tag, 1, args.alike_share / 100)
    rng = random.Random(7)
    n_new = args.messages * 6 // 10
    requests = []
    for _ in range(n_new):
        out, req = factory.new_request(rng.random() < 0.1)
        store_raw(db, out.raw, source="smtp", envelope_from=out.sender)
        requests.append(req)
    drain(pipeline)  # the requests exist before their replies are measured
    numbers = _numbers(db, [r.message_id for r in requests])
    for i in range(args.messages - n_new):
        req = requests[i % len(requests)]
        out = factory.reply(req, rng.random() < 0.1, numbers.get(req.message_id), None)
        store_raw(db, out.raw, source="smtp", envelope_from=out.sender)

    # Measure a second batch of new requests and the replies together.
    for _ in range(n_new):
        out, req = factory.new_request(rng.random() < 0.1)
        store_raw(db, out.raw, source="smtp", envelope_from=out.sender)
    measured = args.messages
    statements: Counter[str] = Counter()
    if args.statements:

        def count(conn, cursor, sql, params, context, many) -> None:  # type: ignore[no-untyped-def] # noqa: ARG001
            statements[" ".join(sql.split())[:150]] += 1

        event.listen(db.engine, "before_cursor_execute", count)
    prof = cProfile.Profile()
    cpu0 = time.process_time()
    if not args.plain:
        prof.enable()
    done = drain(pipeline)
    prof.disable()
    cpu = time.process_time() - cpu0
    how = "without" if args.plain else "under"
    print(f"{done} messages ({measured} expected), {cpu * 1000 / max(done, 1):.2f} ms CPU each")
    print(f"({how} cProfile)")
    print(_incidents(db))
    if statements:
        print(f"{sum(statements.values()) / max(done, 1):.1f} SQL statements per message:")
        for sql, n in statements.most_common(args.top):
            print(f"{n:7d}  {sql}")
    if args.plain:
        db.dispose()
        return 0
    if args.dump:
        prof.dump_stats(args.dump)
    stats = pstats.Stats(prof)
    stats.sort_stats(args.sort).print_stats(args.top)
    db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
